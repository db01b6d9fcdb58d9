//! Cold start and memory of each function binary, under a Lambda runtime API this tool serves
//! on 127.0.0.1: the time from exec to the function's first request for an invocation (its
//! init), the first and the warm invocation durations, and the peak RSS; beside the smallest
//! `lambda_runtime` function, built the same way, as the floor.

use std::convert::Infallible;
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
