//! `rockets launch URL`: sends a seeded stream of rocket messages the way the challenge's test
//! program does (see `rockets_tools::launch`), then optionally checks every rocket.

use std::process::ExitCode;
use std::time::Duration;

use rockets_tools::launch::{LaunchOptions, Plan, Target, launch, parse_duration, verify};

const USAGE: &str = "\
usage: rockets launch URL [flags]

Sends rocket messages to URL (for example http://localhost:8088/messages) the way the
challenge's test program does: a new connection per message, never closed by the client; a
resend 500 ms after any non-2xx answer or failed connection; a request given up after 10 s and
sent again; and a stop once the last new message is answered.

flags (--flag VALUE or --flag=VALUE):
  --concurrency-level N   concurrent senders (default 3)
  --max-messages N        messages to send, resends of duplicates included (default 100000)
  --message-delay D       pause after each message per sender, e.g. 500ms (default 0)
  --seed N                seed for channels, messages and their order (default 444)
  --rockets N             channels to spread the messages over (default 20)
  --duplicates P          percentage of messages sent twice (default 10)
  --verify                afterwards, wait until every rocket equals the in-order fold of the
                          messages that were accepted, and fail if one does not within 60 s
  --json                  print the report as one JSON object";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) != Some("launch") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    args.next();
    match parse(args.collect()) {
        Ok(Some((options, flags))) => run(options, flags),
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rockets: {error}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Flags {
    verify: bool,
    json: bool,
}

fn parse(args: Vec<String>) -> Result<Option<(LaunchOptions, Flags)>, String> {
    let mut options = LaunchOptions::default();
    let mut flags = Flags {
        verify: false,
        json: false,
    };
    let mut url = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with('-') => (name.to_string(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        let name = name.trim_start_matches('-');
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("--{name} needs a value"))
        };
        let number = |text: String| -> Result<u64, String> {
            text.parse().map_err(|e| format!("--{name} {text}: {e}"))
        };
        match name {
            "h" | "help" => return Ok(None),
            "verify" => flags.verify = true,
            "json" => flags.json = true,
            "concurrency-level" => options.concurrency = number(value()?)?.max(1) as usize,
            "max-messages" => options.max_messages = number(value()?)? as usize,
            "message-delay" => options.message_delay = parse_duration(&value()?)?,
            "seed" => options.seed = number(value()?)?,
            "rockets" => options.rockets = number(value()?)?.max(1) as usize,
            "duplicates" => options.duplicate_percent = number(value()?)?.min(100),
            _ if !arg.starts_with('-') && url.is_none() => url = Some(Target::parse(&arg)?),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    options.url = url.ok_or("URL is required")?;
    Ok(Some((options, flags)))
}

fn run(options: LaunchOptions, flags: Flags) -> ExitCode {
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plan = Plan::generate(
        options.seed,
        options.max_messages,
        options.rockets,
        options.duplicate_percent,
    );
    let target = options.url.clone();
    let report = match runtime.block_on(launch(options, &plan)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("rockets: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut json = report.to_json();
    let mut ok = true;
    if flags.verify {
        let expected = plan.expected(&report.accepted);
        match runtime.block_on(verify(&target, &expected, Duration::from_secs(60))) {
            Ok(took) => json["convergedMs"] = (took.as_millis() as u64).into(),
            Err(error) => {
                eprintln!("rockets: not converged: {error}");
                json["converged"] = false.into();
                ok = false;
            }
        }
    }
    if flags.json {
        println!("{json}");
    } else {
        println!(
            "{} of {} messages accepted in {:.1} s ({:.0}/s); {} retries, {} dropped; {} connections held at most",
            report.accepted_count(),
            report.sends,
            report.wall.as_secs_f64(),
            report.accepted_per_second(),
            report.retries(),
            report.dropped,
            report.peak_held
        );
        if let Some(ms) = json.get("convergedMs") {
            println!(
                "every rocket equals the in-order fold of what was accepted ({ms} ms after the last answer)"
            );
        }
    }
    // Held connections are the server's to close; exiting releases them all at once.
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Lifts the soft open-file limit to the hard one: like the challenge's program, this client
/// holds a connection for every message until the server closes it.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into, and setrlimit reads, one valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
