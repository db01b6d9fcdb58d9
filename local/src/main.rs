//! `rockets-local`: the pipeline on 127.0.0.1:8088, on embedded backends or on AWS ones.

use std::process::ExitCode;
use std::time::Duration;

use rockets_aws::provision::{self, QueueSettings};
use rockets_aws::{DynamoStore, RedriveTarget, SqsQueue, sdk_config};
use rockets_local::invoke::Invoker;
use rockets_local::{LocalConfig, StartError, Storage, start_aws, start_embedded};

const USAGE: &str = "\
usage: rockets-local [--addr ADDR] [--data-dir DIR | --in-memory | --aws [--bootstrap]]
       rockets-local bootstrap
       rockets-local event-source --invoke URL [--function NAME]
       rockets-local parked list|purge CHANNEL [--data-dir DIR | --aws]

Serves POST /messages, GET /rockets, GET /rockets/{channel}, GET /rockets/{channel}/events and
GET /health, and applies messages in process.

  (default)     embedded queue and store, kept in the data directory: a 202 means the message
                is synced to disk, and a restart carries on where the last run stopped
  --data-dir DIR  the data directory (default ./rockets-data); one process at a time
  --in-memory   embedded queue and store in memory only, gone when the process ends
  --aws         DynamoDB table TABLE_NAME and SQS queue QUEUE_URL, at the endpoint the AWS SDK
                is configured for (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SQS, ...); the queue is
                long-polled the way Lambda's event source mapping does; messages over the park
                limit go to DEAD_LETTER_QUEUE_URL (default: the queue's redrive target)
  --bootstrap   with --aws: first create the table and queues if missing (QUEUE_URL unneeded)
  bootstrap     only create the table TABLE_NAME (default rockets) and the queues QUEUE_NAME.fifo
                and QUEUE_NAME-dlq.fifo (default rockets), and print their names
  event-source  only the event source: long-poll the SQS queue QUEUE_URL as Lambda's event source
                mapping does and invoke the function NAME (default ApplyFunction) with each batch
                through the Lambda Invoke API at URL, e.g. `sam local start-lambda`'s
                http://127.0.0.1:3001 or `cargo lambda watch`'s http://127.0.0.1:9000

  parked        a channel's parked messages, in the data directory (while no server runs on
                it: a running one serves GET and DELETE /local/rockets/{channel}/parked) or with
                --aws in the table TABLE_NAME: `list` prints them as JSON, `purge` expires them
                all now (they stop counting and are deleted)

  --addr ADDR   listen on IP:PORT, or on localhost:PORT (127.0.0.1 and ::1, the default
                with port 8088)

SIGINT or SIGTERM stops it gracefully: no new connections, requests and batches in flight
finish, exit 0; a second signal exits at once.

environment:
  ROCKETS_ADDR                   listen address, as --addr (default localhost:8088)
  ROCKETS_DATA_DIR               data directory, as --data-dir; :memory: as --in-memory
  ROCKETS_MAX_CONNECTIONS        open connections at most; idle ones are closed first to make
                                 room (default: the open-file limit less 128, at most 10000)
  ROCKETS_HEADER_TIMEOUT_MS      to receive a request's headers (default 10000)
  ROCKETS_BODY_TIMEOUT_MS        to receive a request's body (default 30000)
  ROCKETS_IDLE_TIMEOUT_MS        before an idle keep-alive connection is closed (default 5000)
  ROCKETS_REPORT_MS              activity summary interval while busy (default 5000)
  ROCKETS_POLLERS                concurrent apply pollers (default 4)
  ROCKETS_BATCH_SIZE             records per apply batch, 1-10 (default 10)
  ROCKETS_VISIBILITY_TIMEOUT_MS  before a failed record is redelivered (default 60000)
  ROCKETS_MAX_RECEIVE_COUNT      receives before the dead-letter queue (default 16)
  ROCKETS_PARK_LIMIT             how far ahead of its rocket's last applied message a message
                                 may park; one further ahead goes to the dead-letter queue
                                 (default 10000)
  ROCKETS_PARKED_RETENTION_DAYS  days a parked message waits for its gap before it expires
                                 (default 14)
  ROCKETS_CORS_ALLOW_ORIGIN      origins, comma-separated, whose pages may call the API besides
                                 the server's own page, or * for any (default: none); never
                                 the /local/ routes
  ROCKETS_DISK_RESERVE_MB        free space the data directory leaves on its disk; writes stop
                                 short of it, and resume once there is room (default 64)
  ROCKETS_ALLOWED_HOSTS          names the server answers to in Host, comma-separated, besides
                                 localhost and its addresses (refuses DNS rebinding)
  RUST_LOG                       log level (default info)";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A message's way through one process allocates its text several times over, and the data
/// directory's engine more: glibc's allocator took a fifth of the pipeline's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rockets::config::run_main(async {
        rockets::telemetry::init();
        match run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) if error.is::<StartError>() => {
                eprintln!("rockets-local: {error}");
                ExitCode::from(1)
            }
            Err(error) => {
                eprintln!("rockets-local: {error}\n\n{USAGE}");
                ExitCode::from(2)
            }
        }
    })
}

/// What the command line asks for.
enum Command {
    Help,
    Bootstrap,
    Parked { action: String, channel: String },
    EventSource { invoke: String, function: String },
    Serve { bootstrap: bool },
}

/// The command and the backend (`--aws`), with `config` changed as the flags say.
fn parse_args(config: &mut LocalConfig) -> Result<(Command, bool), Error> {
    let (mut aws, mut bootstrap, mut event_source, mut command) = (false, false, false, None);
    let (mut invoke, mut function) = (None, "ApplyFunction".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let addr = args
                    .next()
                    .ok_or("--addr needs IP:PORT or localhost:PORT")?;
                config.listen = addr.parse().map_err(|e| format!("--addr {e}"))?;
            }
            "--data-dir" => {
                let dir = args.next().ok_or("--data-dir needs a directory")?;
                config.storage = dir.parse().map_err(|e| format!("--data-dir {e}"))?;
            }
            "--in-memory" => config.storage = Storage::Memory,
            "--aws" => aws = true,
            "--bootstrap" => bootstrap = true,
            "bootstrap" => command = Some(Command::Bootstrap),
            "event-source" => event_source = true,
            "parked" => {
                let action = args.next().ok_or("parked needs list or purge")?;
                let channel = args.next().ok_or("parked needs a channel")?;
                command = Some(Command::Parked { action, channel });
            }
            "--invoke" => invoke = Some(args.next().ok_or("--invoke needs a URL")?),
            "--function" => function = args.next().ok_or("--function needs a name")?,
            "-h" | "--help" => return Ok((Command::Help, aws)),
            other => return Err(format!("unexpected argument {other}").into()),
        }
    }
    let command = match command {
        _ if event_source => Command::EventSource {
            invoke: invoke.ok_or("event-source needs --invoke URL")?,
            function,
        },
        Some(command) => command,
        None => Command::Serve { bootstrap },
    };
    Ok((command, aws))
}

async fn run() -> Result<(), Error> {
    let mut config = LocalConfig::from_env()?;
    if let Some(files) = rockets_local::limits::raise_open_files() {
        tracing::debug!(open_files = files, "open-file limit");
    }
    match parse_args(&mut config)? {
        (Command::Help, _) => {
            println!("{USAGE}");
            Ok(())
        }
        (Command::Bootstrap, _) => {
            let (table, queues) = create_resources(&config).await?;
            println!(
                "TABLE_NAME={table}\nQUEUE_URL={}\nDEAD_LETTER_QUEUE_URL={}",
                queues.url, queues.dead_letter_url
            );
            Ok(())
        }
        (Command::Parked { action, channel }, aws) => parked(&config, aws, &action, &channel).await,
        (Command::EventSource { invoke, function }, _) => {
            let invoker = Invoker::new(&invoke, &function, config.queue.visibility_timeout)?;
            let queue = SqsQueue::from_env(&sdk_config().await)?;
            println!(
                "rockets-local event source: {} -> {function} at {invoke}",
                queue.url()
            );
            Ok(rockets_local::run_event_source(&config, queue, invoker).await?)
        }
        (Command::Serve { bootstrap }, aws) => serve(&config, aws, bootstrap).await,
    }
}

/// Serves the pipeline on AWS backends (`aws`, creating them first with `bootstrap`) or on
/// embedded ones, until a signal stops it.
async fn serve(config: &LocalConfig, aws: bool, bootstrap: bool) -> Result<(), Error> {
    let server = if aws {
        let sdk = sdk_config().await;
        let (queue, store) = if bootstrap {
            let (table, queues) = create_resources(config).await?;
            (
                SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), queues.url),
                DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table),
            )
        } else {
            (SqsQueue::from_env(&sdk)?, DynamoStore::from_env(&sdk)?)
        };
        // Where messages over the park limit go.
        let dead_letters = match SqsQueue::dead_letters_from_env(&sdk) {
            Ok(named) => RedriveTarget::known(queue.clone(), named),
            Err(_) => queue.redrive_target(),
        };
        start_aws(config, queue, dead_letters, store)
            .await
            .map_err(|source| StartError::Listen {
                listen: config.listen,
                source,
            })?
    } else {
        start_embedded(config).await?
    };
    let urls: Vec<String> = server
        .addrs()
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect();
    println!("rockets-local listening on {}", urls.join(" "));
    Ok(server.wait().await?)
}

/// `parked list|purge CHANNEL`, in the table (`aws`) or the data directory.
async fn parked(config: &LocalConfig, aws: bool, action: &str, channel: &str) -> Result<(), Error> {
    let channel = rockets::message::Channel::parse(channel)
        .map_err(|e| format!("channel {channel:?} {e}"))?;
    if aws {
        let store = DynamoStore::from_env(&sdk_config().await)?;
        return parked_messages(&store, action, &channel).await;
    }
    let Storage::Dir(dir) = &config.storage else {
        return Err("parked needs a data directory or --aws".into());
    };
    let store = rockets_embedded::DurableStore::open(&rockets_embedded::DataDir::open(dir)?)?;
    parked_messages(&store, action, &channel).await
}

/// `parked list` prints a channel's parked messages; `parked purge` expires them all.
async fn parked_messages<S: rockets::ports::ChannelStore>(
    store: &S,
    action: &str,
    channel: &rockets::message::Channel,
) -> Result<(), Error> {
    match action {
        "list" => {
            let view = match store.load(channel, 0, &[]).await? {
                Some(snapshot) => store.parked(&snapshot.rocket).await?,
                None => rockets::ordering::ParkedView::none(),
            };
            println!("{:#}", rockets_local::operations::parked_json(&view));
        }
        "purge" => match apply::purge_parked(store, channel).await? {
            Some(purged) => println!("{{\"purged\": {purged}}}"),
            None => return Err(format!("no rocket on channel {channel}").into()),
        },
        other => return Err(format!("parked {other}: expected list or purge").into()),
    }
    Ok(())
}

/// Creates the table and queues where they are missing.
async fn create_resources(config: &LocalConfig) -> Result<(String, provision::Queues), Error> {
    let sdk = sdk_config().await;
    let table = rockets::config::parsed("TABLE_NAME", "rockets".to_string())?;
    let name = rockets::config::parsed("QUEUE_NAME", "rockets".to_string())?;
    provision::ensure_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await?;
    let settings = QueueSettings {
        visibility_timeout: config.queue.visibility_timeout.max(Duration::from_secs(1)),
        max_receive_count: config.queue.max_receive_count,
    };
    let queues = provision::ensure_queues(&aws_sdk_sqs::Client::new(&sdk), &name, settings).await?;
    Ok((table, queues))
}
