//! The whole pipeline in one process: the ingest and query handlers behind an HTTP server, the
//! apply handler behind an in-process event source, on embedded backends.
//!
//! Every HTTP request becomes the API Gateway HTTP API event Lambda would receive, converted by
//! lambda_http itself, so the handler code that runs here is the code that runs in Lambda.

pub mod event_source;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rockets::aws::{DynamoStore, SqsQueue};
use rockets::config::{self, ConfigError};
use rockets::embedded::{EmbeddedQueue, EmbeddedStore, QueueConfig};
use rockets::http::{ApiError, Function, Route, api_gateway_request};
use rockets::ports::{MessageQueue, RocketReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// API Gateway's own limit on a request body; larger bodies never reach a function.
const GATEWAY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Settings, from `ROCKETS_*` environment variables.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub addr: SocketAddr,
    /// Concurrent event-source pollers, like Lambda's concurrent apply invocations.
    pub pollers: usize,
    pub batch_size: usize,
    pub queue: QueueConfig,
}

impl LocalConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = QueueConfig::default();
        Ok(LocalConfig {
            addr: config::parsed("ROCKETS_ADDR", SocketAddr::from(([127, 0, 0, 1], 8088)))?,
            pollers: config::parsed("ROCKETS_POLLERS", 4)?,
            batch_size: config::parsed("ROCKETS_BATCH_SIZE", 10)?,
            queue: QueueConfig {
                visibility_timeout: config::millis(
                    "ROCKETS_VISIBILITY_TIMEOUT_MS",
                    defaults.visibility_timeout,
                )?,
                max_receive_count: config::parsed(
                    "ROCKETS_MAX_RECEIVE_COUNT",
                    defaults.max_receive_count,
                )?,
                deduplication_window: defaults.deduplication_window,
            },
        })
    }
}

/// The backends one local server runs on.
pub struct Backends<Q, S> {
    pub queue: Arc<Q>,
    pub store: Arc<S>,
}

impl<Q, S> Clone for Backends<Q, S> {
    fn clone(&self) -> Self {
        Backends {
            queue: self.queue.clone(),
            store: self.store.clone(),
        }
    }
}

/// A running local server; dropping it stops everything it started.
pub struct LocalServer {
    addr: SocketAddr,
    pub embedded: Option<Backends<EmbeddedQueue, EmbeddedStore>>,
    tasks: JoinSet<()>,
}

impl LocalServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until the server fails or the process is asked to stop.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.tasks.join_next() => tracing::error!("a server task ended unexpectedly"),
            _ = shutdown_signal() => tracing::info!("stopping"),
        }
    }
}

async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Starts the pipeline on embedded backends.
pub async fn start_embedded(config: &LocalConfig) -> std::io::Result<LocalServer> {
    let backends = Backends {
        queue: Arc::new(EmbeddedQueue::new(config.queue)),
        store: Arc::new(EmbeddedStore::new()),
    };
    let mut server = start(config, backends.clone(), backends.clone()).await?;
    server.embedded = Some(backends);
    Ok(server)
}

/// Starts the pipeline on the AWS backends (DynamoDB and SQS, or emulators of them); the event
/// source long-polls the queue as Lambda's event source mapping does.
pub async fn start_aws(
    config: &LocalConfig,
    queue: SqsQueue,
    store: DynamoStore,
) -> std::io::Result<LocalServer> {
    let backends = Backends {
        queue: Arc::new(queue),
        store: Arc::new(store),
    };
    start(config, backends.clone(), backends).await
}

/// Starts the HTTP server on `http` and the event source pollers on `events`.
pub async fn start<Q, R, E, S>(
    config: &LocalConfig,
    http: Backends<Q, R>,
    events: Backends<E, S>,
) -> std::io::Result<LocalServer>
where
    Q: MessageQueue + 'static,
    R: RocketReader + 'static,
    E: rockets::ports::QueueConsumer + 'static,
    S: rockets::ports::ChannelStore + 'static,
{
    let listener = TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let mut tasks = JoinSet::new();
    for _ in 0..config.pollers.max(1) {
        tasks.spawn(event_source::pump(
            events.queue.clone(),
            events.store.clone(),
            config.batch_size.clamp(1, 10),
        ));
    }
    tasks.spawn(accept_loop(listener, http));
    tracing::info!(%addr, pollers = config.pollers, "serving POST /messages, GET /rockets, GET /rockets/{{channel}}[/events], GET /health");
    Ok(LocalServer {
        addr,
        embedded: None,
        tasks,
    })
}

async fn accept_loop<Q, R>(listener: TcpListener, backends: Backends<Q, R>)
where
    Q: MessageQueue + 'static,
    R: RocketReader + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let backends = backends.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let backends = backends.clone();
                async move { Ok::<_, Infallible>(dispatch(&backends, request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// Routes one request to its function, as API Gateway does.
async fn dispatch<Q, R>(
    backends: &Backends<Q, R>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>>
where
    Q: MessageQueue,
    R: RocketReader,
{
    let (parts, body) = request.into_parts();
    let route = match Route::resolve(&parts.method, parts.uri.path()) {
        Ok(route) => route,
        Err(error) => return to_hyper(error.into_response()),
    };
    let body = match Limited::new(body, GATEWAY_BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return to_hyper(
                ApiError::PayloadTooLarge {
                    limit: GATEWAY_BODY_LIMIT,
                }
                .into_response(),
            );
        }
    };
    let request = api_gateway_request(
        parts.method.clone(),
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body.to_vec(),
    );
    let response = match route.function() {
        Function::Ingest => ingest::handle(&*backends.queue, request).await,
        Function::Query => query::handle(&*backends.store, request).await,
    };
    to_hyper(response)
}

fn to_hyper(response: lambda_http::Response<lambda_http::Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(binary) => Bytes::from(binary),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}
