//! Cold start and memory of each function binary, under a Lambda runtime API this tool serves
//! on 127.0.0.1: the time from exec to the function's first request for an invocation (its
//! init), the first and the warm invocation durations, and the peak RSS; beside the smallest
//! `lambda_runtime` function, built the same way, as the floor.

use crate::Options;
use crate::cost::Environment;
use crate::mark;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

use crate::stats::{Summary, millis};

/// One function's figures over repeated cold starts.
pub struct ColdStart {
    pub function: String,
    pub init_ms: Summary,
    pub first_ms: Summary,
    pub warm_ms: Summary,
    pub peak_rss_mb: Summary,
}

/// The runtime API's side of one invocation.
struct Invocation {
    event: String,
    answered: oneshot::Sender<Instant>,
}

#[derive(Default)]
struct Api {
    first_poll: Mutex<Option<Instant>>,
    pending: Mutex<Option<oneshot::Sender<Instant>>>,
}

/// Serves `/2018-06-01/runtime/invocation/next` from `invocations` and takes the responses.
async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    invocations: Arc<tokio::sync::Mutex<mpsc::Receiver<Invocation>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (api, invocations) = (api.clone(), invocations.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (api, invocations) = (api.clone(), invocations.clone());
                async move { Ok::<_, Infallible>(route(request, &api, &invocations).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    request: Request<Incoming>,
    api: &Api,
    invocations: &tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let ok = |body: String| Response::new(Full::new(Bytes::from(body)));
    if path.ends_with("/invocation/next") {
        api.first_poll
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let Some(invocation) = invocations.lock().await.recv().await else {
            return ok(String::new());
        };
        *api.pending.lock().unwrap() = Some(invocation.answered);
        let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
        return Response::builder()
            .header("lambda-runtime-aws-request-id", "bench-request")
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:local:000000000000:function:bench",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0",
            )
            .body(Full::new(Bytes::from(invocation.event)))
            .expect("valid response");
    }
    if path.ends_with("/response") || path.ends_with("/error") {
        let _ = request.into_body().collect().await;
        if let Some(answered) = api.pending.lock().unwrap().take() {
            let _ = answered.send(Instant::now());
        }
        return Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .expect("valid response");
    }
    ok(String::new())
}

/// Peak resident set of a running process, from `/proc`, in MiB.
fn peak_rss_mb(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts `binary` `runs` times, each time invoking it once cold and `warm` times warm.
pub fn measure(
    binary: &Path,
    event: &str,
    env: &[(&str, &str)],
    runs: usize,
    warm: usize,
) -> ColdStart {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut inits, mut firsts, mut warms, mut peaks) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let api = Arc::new(Api::default());
        let (send, receive) = mpsc::channel::<Invocation>(1);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let server = runtime.spawn(serve(
            listener,
            api.clone(),
            Arc::new(tokio::sync::Mutex::new(receive)),
        ));

        let started = Instant::now();
        let mut child = Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_LEVEL", "ERROR")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            if let Some(at) = *api.first_poll.lock().unwrap() {
                break at - started;
            }
            assert!(
                Instant::now() < deadline,
                "{} never asked for an invocation",
                binary.display()
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        inits.push(millis(init));
        for i in 0..=warm {
            let (answered, done) = oneshot::channel();
            let sent = Instant::now();
            runtime
                .block_on(send.send(Invocation {
                    event: event.to_string(),
                    answered,
                }))
                .expect("runtime API running");
            let finished = runtime.block_on(done).expect("function answered");
            let took = millis(finished - sent);
            if i == 0 {
                firsts.push(took);
            } else {
                warms.push(took);
            }
        }
        peaks.push(peak_rss_mb(&child));
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
    }
    ColdStart {
        function: binary
            .parent()
            .and_then(Path::file_name)
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        init_ms: Summary::of(inits),
        first_ms: Summary::of(firsts),
        warm_ms: Summary::of(warms),
        peak_rss_mb: Summary::of(peaks),
    }
}

pub fn report(options: &Options) -> String {
    let dir = &options.lambda_dir;
    let functions = [
        ("hello", "{}".to_string()),
        ("hello-sdk", "{}".to_string()),
        (
            "ingest",
            std::fs::read_to_string("events/apigw-post-message-invalid.json").unwrap_or_default(),
        ),
        (
            "query",
            std::fs::read_to_string("events/apigw-health.json").unwrap_or_default(),
        ),
        ("apply", "{\"Records\":[]}".to_string()),
    ];
    let missing: Vec<_> = functions
        .iter()
        .filter(|(f, _)| !dir.join(f).join("bootstrap").exists())
        .map(|(f, _)| f.to_string())
        .collect();
    if !missing.is_empty() {
        return format!(
            "Not measured: no {} under {} (scripts/bench builds them with cargo lambda).\n",
            missing.join(", "),
            dir.display()
        );
    }
    let env = [
        ("TABLE_NAME", "rockets"),
        ("QUEUE_URL", "http://127.0.0.1:9/000000000000/rockets.fifo"),
        (
            "DEAD_LETTER_QUEUE_URL",
            "http://127.0.0.1:9/000000000000/rockets-dlq.fifo",
        ),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let runs = if options.quick { 3 } else { 10 };
    let mut out = String::from(
        "| function | init (ms) | first invocation (ms) | warm invocation (ms) | peak RSS (MiB) | bootstrap.zip (KiB) |\n|---|---|---|---|---|---|\n",
    );
    let (mut floor, mut sdk_floor) = (0.0, 0.0);
    let mut verdicts = Vec::new();
    // Deployed, the functions trust Amazon's five roots; `SSL_CERT_FILE` and `SSL_CERT_DIR`
    // make them load the system's whole CA store instead, the bundle and the directory beside
    // it, as they all did before, for comparison in the same run.
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|path| Path::new(path).exists());
    let mut with_system_store = env.to_vec();
    if let Some(bundle) = bundle {
        with_system_store.push(("SSL_CERT_FILE", bundle));
        if let Some(dir) = Path::new(bundle).parent().and_then(Path::to_str) {
            with_system_store.push(("SSL_CERT_DIR", dir));
        }
    }
    let mut variants: Vec<(&str, &str, Environment)> = Vec::new();
    for (function, event) in &functions {
        variants.push((function, event, &env[..]));
        if !function.starts_with("hello") && bundle.is_some() {
            variants.push((function, event, &with_system_store[..]));
        }
    }
    for (function, event, env) in variants {
        let system_store = env.iter().any(|(k, _)| *k == "SSL_CERT_FILE");
        let measured = measure(&dir.join(function).join("bootstrap"), event, env, runs, 20);
        let zip = std::fs::metadata(dir.join(function).join("bootstrap.zip")).map_or_else(
            |_| "–".to_string(),
            |m| format!("{:.0}", m.len() as f64 / 1024.0),
        );
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} | {zip} |",
            measured.function,
            if system_store {
                ", system CA store"
            } else {
                ""
            },
            measured.init_ms.show(2),
            measured.first_ms.show(2),
            measured.warm_ms.show(3),
            measured.peak_rss_mb.show(1)
        );
        if function == "hello" {
            floor = measured.init_ms.median;
        } else if function == "hello-sdk" {
            sdk_floor = measured.init_ms.median;
        } else if !system_store {
            let zipped_mb = std::fs::metadata(dir.join(function).join("bootstrap.zip"))
                .map_or(f64::MAX, |m| m.len() as f64 / 1024.0 / 1024.0);
            verdicts.push(format!(
                "{function}: init within 1.5× the floor {} ({:.1}×; {:.1}× `hello-sdk`), RSS under 20 MB {}, zip under 5 MB {}",
                mark(measured.init_ms.median <= 1.5 * floor),
                measured.init_ms.median / floor,
                measured.init_ms.median / sdk_floor,
                mark(measured.peak_rss_mb.median < 20.0),
                mark(zipped_mb < 5.0)
            ));
        }
    }
    let _ = writeln!(
        out,
        "\nThe binaries are `cargo lambda build --release --x86-64` outputs; `hello` is the smallest \
         `lambda_runtime` function, built the same way, as the floor; `hello-sdk` is `hello` plus \
         what any function that calls AWS builds at init (the SDK configuration, as these functions \
         load it, and one client). This tool serves the Lambda \
         runtime API on 127.0.0.1 and measures from exec to the function's first request for an \
         invocation (init), then one cold and twenty warm invocations; peak RSS is the process's \
         VmHWM. Events that touch no AWS service isolate the runtime and handler cost: an invalid \
         message for ingest, `GET /health` for query, an empty batch for apply. The functions run as \
         deployed, trusting only Amazon Trust Services' five root certificates; the rows marked \
         \"system CA store\" set `SSL_CERT_FILE` and `SSL_CERT_DIR` to the system's bundle and its \
         directory, which makes them load the whole store instead, as every function did before.\n\n{}",
        verdicts
            .iter()
            .map(|v| format!("- {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}
