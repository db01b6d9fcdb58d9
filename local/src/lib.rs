//! The whole pipeline in one process: the ingest and query handlers behind an HTTP server, the
//! apply handler behind an in-process event source, on embedded backends or AWS ones.
//!
//! Every read becomes the API Gateway HTTP API event Lambda would receive, converted by
//! lambda_http itself, and a POST's body goes to the ingest handler's core, so the handler
//! code that runs here is the code that runs in Lambda.
//!
//! - [`front`]: listeners, connection limits and timeouts, graceful shutdown.
//! - [`cors`]: CORS answers as the template's HTTP API gives them.
//! - [`guard`]: the `Host` and cross-origin checks that keep other web pages out.
//! - [`event_source`]: what Lambda's SQS event source mapping does, in process.
//! - [`activity`]: counters and the periodic one-line summary.
//! - [`limits`]: the open-file limit.
//! - [`operations`]: the embedded queue's depth, dead letters and redrive, under `/local/`.

pub mod activity;
pub mod cors;
pub mod event_source;
pub mod front;
pub mod guard;
pub mod invoke;
pub mod limits;
pub mod operations;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use rockets::config::{self, ConfigError};
use rockets::http::{ApiError, Function, Route, api_gateway_request};
use rockets::message::ValidationError;
use rockets::ports::{ChannelStore, MessageQueue, QueueConsumer, RocketReader, SourceQueue};
use rockets_aws::{DynamoStore, SqsQueue};
use rockets_embedded::{
    DataDir, DataDirError, DeadLetters, DurableStore, EmbeddedQueue, EmbeddedStore, QueueConfig,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use activity::{Activity, DepthProbe};
use cors::Cors;
use front::{Front, FrontConfig, Handler};
use guard::Guard;

/// API Gateway's own limit on a request body; larger bodies never reach a function.
const GATEWAY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Where the server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// 127.0.0.1 and ::1 on this port, so `localhost` works whichever of the two a client
    /// resolves it to; never another interface.
    Loopback(u16),
    /// Exactly this address.
    Addr(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    /// `HOST:PORT` with an IP address, or `localhost:PORT` for both loopback addresses.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix("localhost:") {
            return port
                .parse()
                .map(Listen::Loopback)
                .map_err(|e| format!("{text}: {e}"));
        }
        text.parse()
            .map(Listen::Addr)
            .map_err(|e| format!("{text}: {e} (expected IP:PORT or localhost:PORT)"))
    }
}

impl Listen {
    async fn bind(self) -> std::io::Result<Vec<TcpListener>> {
        match self {
            Listen::Addr(addr) => Ok(vec![TcpListener::bind(addr).await?]),
            Listen::Loopback(port) => {
                let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
                let port = v4.local_addr()?.port();
                let mut listeners = vec![v4];
                match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
                    Ok(v6) => listeners.push(v6),
                    Err(error) => {
                        tracing::info!(%error, "not listening on [::1]; IPv4 loopback only")
                    }
                }
                Ok(listeners)
            }
        }
    }
}

/// Where the embedded backends keep their data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In a data directory: a `202` means the message is synced there, and a restart carries on
    /// where the last run stopped.
    Dir(PathBuf),
    /// In memory: everything is gone when the process ends.
    Memory,
}

impl Storage {
    /// `rockets-data` in the current directory.
    pub fn default_dir() -> Self {
        Storage::Dir(PathBuf::from("rockets-data"))
    }
}

impl FromStr for Storage {
    type Err = String;

    /// A directory, or `:memory:` for none.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("must name a directory, or :memory:".into()),
            ":memory:" => Ok(Storage::Memory),
            dir => Ok(Storage::Dir(PathBuf::from(dir))),
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {listen:?}: {source}")]
    Listen {
        listen: Listen,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] DataDirError),
}

/// Settings, from `ROCKETS_*` environment variables.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub listen: Listen,
    /// Concurrent event-source pollers, like Lambda's concurrent apply invocations.
    pub pollers: usize,
    pub batch_size: usize,
    pub queue: QueueConfig,
    pub front: FrontConfig,
    /// How often the activity summary is logged while something happens.
    pub report_every: Duration,
    /// How the apply handler treats parked messages and failures (its visibility timeout is
    /// the queue's).
    pub apply: apply::Settings,
    /// Where the embedded backends keep their data.
    pub storage: Storage,
    /// Which origins a browser may call the API from, besides the server's own page.
    pub cors: Cors,
    /// Names the server answers to besides its own addresses (`Host`, `name[:port]`).
    pub allowed_hosts: Vec<String>,
    /// The free space the data directory keeps on its disk; writes stop short of it.
    pub disk_reserve: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            listen: Listen::Loopback(8088),
            pollers: 4,
            batch_size: 10,
            queue: QueueConfig::default(),
            front: FrontConfig::default(),
            report_every: Duration::from_secs(5),
            apply: apply::Settings::default(),
            storage: Storage::default_dir(),
            cors: Cors::Off,
            allowed_hosts: Vec::new(),
            disk_reserve: rockets_embedded::DISK_RESERVE,
        }
    }
}

impl LocalConfig {
    /// The defaults on 127.0.0.1 and a port the system picks, in memory, for tests and
    /// benchmarks.
    pub fn ephemeral() -> Self {
        LocalConfig {
            listen: Listen::Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            storage: Storage::Memory,
            ..LocalConfig::default()
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let d = LocalConfig::default();
        let max_connections = config::parsed("ROCKETS_MAX_CONNECTIONS", 0usize)?;
        Ok(LocalConfig {
            listen: config::parsed("ROCKETS_ADDR", d.listen)?,
            pollers: config::parsed("ROCKETS_POLLERS", d.pollers)?,
            batch_size: config::parsed("ROCKETS_BATCH_SIZE", d.batch_size)?,
            queue: QueueConfig {
                visibility_timeout: config::millis(
                    "ROCKETS_VISIBILITY_TIMEOUT_MS",
                    d.queue.visibility_timeout,
                )?,
                max_receive_count: config::parsed(
                    "ROCKETS_MAX_RECEIVE_COUNT",
                    d.queue.max_receive_count,
                )?,
                deduplication_window: d.queue.deduplication_window,
            },
            front: FrontConfig {
                header_read_timeout: config::millis(
                    "ROCKETS_HEADER_TIMEOUT_MS",
                    d.front.header_read_timeout,
                )?,
                body_read_timeout: config::millis(
                    "ROCKETS_BODY_TIMEOUT_MS",
                    d.front.body_read_timeout,
                )?,
                idle_timeout: config::millis("ROCKETS_IDLE_TIMEOUT_MS", d.front.idle_timeout)?,
                max_connections: (max_connections > 0).then_some(max_connections),
                shutdown_grace: d.front.shutdown_grace,
            },
            report_every: config::millis("ROCKETS_REPORT_MS", d.report_every)?,
            apply: apply::Settings {
                park_limit: config::parsed("ROCKETS_PARK_LIMIT", d.apply.park_limit)?,
                parked_retention: apply::days_long(config::parsed(
                    "ROCKETS_PARKED_RETENTION_DAYS",
                    apply::Settings::PARKED_RETENTION_DAYS,
                )?),
                ..d.apply
            },
            storage: config::parsed("ROCKETS_DATA_DIR", d.storage)?,
            cors: config::parsed("ROCKETS_CORS_ALLOW_ORIGIN", d.cors)?,
            allowed_hosts: config::parsed("ROCKETS_ALLOWED_HOSTS", String::new())?
                .split(',')
                .map(str::trim)
                .filter(|host| !host.is_empty())
                .map(str::to_owned)
                .collect(),
            disk_reserve: config::parsed("ROCKETS_DISK_RESERVE_MB", d.disk_reserve >> 20)? << 20,
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
    front: Front,
    /// The embedded queue, when the server runs on one.
    pub embedded_queue: Option<Arc<EmbeddedQueue>>,
    pub activity: Arc<Activity>,
    stop_pollers: watch::Sender<bool>,
    pollers: JoinSet<()>,
    tasks: JoinSet<()>,
}

impl LocalServer {
    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.front.addrs()[0]
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        self.front.addrs()
    }

    pub fn front(&self) -> &Front {
        &self.front
    }

    /// Runs until a task fails (an error) or SIGINT/SIGTERM asks it to stop, then stops
    /// gracefully; a second signal during that exits the process at once.
    pub async fn wait(mut self) -> Result<(), &'static str> {
        tokio::select! {
            _ = self.tasks.join_next() => return Err("a server task ended unexpectedly"),
            _ = stop_signal() => {}
        }
        tracing::info!("stopping: no new connections; finishing requests and batches in flight");
        tokio::select! {
            clean = self.shutdown() => {
                let totals = self.activity.totals();
                if clean {
                    tracing::info!(?totals, "stopped");
                } else {
                    tracing::warn!(?totals, "stopped; some requests or batches did not finish in time");
                }
                Ok(())
            }
            _ = stop_signal() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    }

    /// Stops accepting, answers the requests in flight, lets each poller finish its batch.
    /// True if everything finished within the grace period.
    pub async fn shutdown(&mut self) -> bool {
        let front_done = self.front.shutdown().await;
        let _ = self.stop_pollers.send(true);
        let grace = self.front.grace();
        let pollers_done = tokio::time::timeout(grace, async {
            while self.pollers.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        self.tasks.abort_all();
        front_done && pollers_done
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Starts the pipeline on embedded backends, in the data directory `config.storage` names or
/// in memory.
pub async fn start_embedded(config: &LocalConfig) -> Result<LocalServer, StartError> {
    match &config.storage {
        Storage::Memory => {
            let queue = Arc::new(EmbeddedQueue::new(config.queue));
            start_on(config, queue, Arc::new(EmbeddedStore::new())).await
        }
        Storage::Dir(path) => {
            let dir = DataDir::open(path)?;
            dir.keep_free(config.disk_reserve);
            let queue = Arc::new(EmbeddedQueue::open(config.queue, &dir)?);
            let store = Arc::new(DurableStore::open(&dir)?);
            let depth = queue.depth();
            tracing::info!(
                data_dir = %dir.path().display(),
                rockets = store.len(),
                queued = depth.visible,
                dead_letters = depth.dead,
                "data directory open"
            );
            start_on(config, queue, store).await
        }
    }
}

async fn start_on<S>(
    config: &LocalConfig,
    queue: Arc<EmbeddedQueue>,
    store: Arc<S>,
) -> Result<LocalServer, StartError>
where
    S: ChannelStore + RocketReader + 'static,
{
    let backends = Backends {
        queue: queue.clone(),
        store,
    };
    let dead_letters = Arc::new(DeadLetters(queue.clone()));
    start(
        config,
        backends.clone(),
        backends,
        dead_letters,
        Some(queue),
    )
    .await
    .map_err(|source| StartError::Listen {
        listen: config.listen,
        source,
    })
}

/// Starts the pipeline on the AWS backends (DynamoDB and SQS, or emulators of them); the event
/// source long-polls the queue as Lambda's event source mapping does.
pub async fn start_aws<D: MessageQueue + 'static>(
    config: &LocalConfig,
    queue: SqsQueue,
    dead_letters: D,
    store: DynamoStore,
) -> std::io::Result<LocalServer> {
    let backends = Backends {
        queue: Arc::new(queue),
        store: Arc::new(store),
    };
    start(
        config,
        backends.clone(),
        backends,
        Arc::new(dead_letters),
        None,
    )
    .await
}

/// Runs only the event source: `config.pollers` pollers long-poll `queue` and have `applier`
/// apply each batch, until SIGINT or SIGTERM; batches in flight finish first.
pub async fn run_event_source<C, A>(
    config: &LocalConfig,
    queue: C,
    applier: A,
) -> Result<(), String>
where
    C: QueueConsumer + 'static,
    A: event_source::Applier<C::Record> + 'static,
{
    let (queue, applier) = (Arc::new(queue), Arc::new(applier));
    let activity = Arc::new(Activity::default());
    let (stop, stopped) = watch::channel(false);
    let mut pollers = JoinSet::new();
    for _ in 0..config.pollers.max(1) {
        pollers.spawn(event_source::pump(
            queue.clone(),
            applier.clone(),
            config.batch_size.clamp(1, 10),
            activity.clone(),
            stopped.clone(),
        ));
    }
    stop_signal().await;
    tracing::info!("stopping: finishing the batches in flight");
    let _ = stop.send(true);
    while pollers.join_next().await.is_some() {}
    Ok(())
}

/// Starts the HTTP server on `http` and the event source pollers on `events`, which send
/// messages over the park limit to `dead_letters`. With `embedded`, the embedded queue behind
/// them, its depth is reported and its operations served under `/local/`.
pub async fn start<Q, R, E, S, D>(
    config: &LocalConfig,
    http: Backends<Q, R>,
    events: Backends<E, S>,
    dead_letters: Arc<D>,
    embedded: Option<Arc<EmbeddedQueue>>,
) -> std::io::Result<LocalServer>
where
    Q: MessageQueue + 'static,
    R: RocketReader + ChannelStore + 'static,
    E: QueueConsumer + SourceQueue + 'static,
    S: ChannelStore + 'static,
    D: MessageQueue + 'static,
{
    let listeners = config.listen.bind().await?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<_>>()?;
    let activity = Arc::new(Activity::default());
    let (stop_pollers, stopped) = watch::channel(false);
    let applier = Arc::new(event_source::InProcess {
        visibility: events.queue.clone(),
        store: events.store.clone(),
        dead_letters,
        settings: apply::Settings {
            visibility_timeout: config.queue.visibility_timeout,
            ..config.apply
        },
    });
    let mut pollers = JoinSet::new();
    for _ in 0..config.pollers.max(1) {
        pollers.spawn(event_source::pump(
            events.queue.clone(),
            applier.clone(),
            config.batch_size.clamp(1, 10),
            activity.clone(),
            stopped.clone(),
        ));
    }
    let api = Arc::new(Api {
        backends: http,
        activity: activity.clone(),
        body_read_timeout: config.front.body_read_timeout,
        cors: config.cors.clone(),
        guard: Guard::new(&addrs, &config.allowed_hosts, config.cors.clone()),
        operations: embedded.clone(),
    });
    let depth = embedded
        .clone()
        .map(|queue| -> DepthProbe { Box::new(move || queue.depth()) });
    let mut tasks = JoinSet::new();
    let front = Front::start(listeners, api, config.front, &mut tasks)?;
    tasks.spawn(activity::report(
        activity.clone(),
        front.stats.clone(),
        depth,
        config.report_every,
    ));
    let addrs: Vec<String> = front.addrs().iter().map(ToString::to_string).collect();
    tracing::info!(
        addrs = addrs.join(" "),
        pollers = config.pollers,
        max_connections = front.connection_cap(),
        "serving the dashboard at GET /, the API (GET /openapi.yaml describes it): POST /messages, GET /rockets, GET /rockets/{{channel}}[/events], GET /health"
    );
    Ok(LocalServer {
        front,
        embedded_queue: embedded,
        activity,
        stop_pollers,
        pollers,
        tasks,
    })
}

/// The API as API Gateway presents it: routes each request to its function.
struct Api<Q, R> {
    backends: Backends<Q, R>,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    cors: Cors,
    guard: Guard,
    operations: Option<Arc<EmbeddedQueue>>,
}

impl<Q: MessageQueue + 'static, R: RocketReader + ChannelStore + 'static> Handler for Api<Q, R> {
    async fn call(&self, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let path = request.uri().path();
        if let Err(refused) = self.guard.check(request.method(), path, request.headers()) {
            let mut response = to_hyper(refused.into_response());
            if !request.body().is_end_stream() {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            return response;
        }
        let operator = path.starts_with(operations::PREFIX);
        if let Some(status) =
            (self.cors.preflight(request.method(), request.headers())).filter(|_| !operator)
        {
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            self.cors
                .add_preflight_headers(request.headers(), response.headers_mut());
            return response;
        }
        let is_post = request.uri().path() == "/messages";
        let origin = request.headers().get(hyper::header::ORIGIN).cloned();
        let mut response = self.dispatch(request).await;
        if is_post {
            self.activity.record_post(response.status().as_u16());
        }
        if !operator {
            self.cors
                .add_response_headers(origin.as_ref(), response.headers_mut());
        }
        response
    }
}

impl<Q: MessageQueue, R: RocketReader + ChannelStore> Api<Q, R> {
    async fn dispatch(&self, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        // An answer given before the body is read leaves that body on the connection, where it
        // would be taken for the next request: such answers close the connection instead.
        let unread_body = !body.is_end_stream();
        let early = |answer: lambda_http::Response<lambda_http::Body>| {
            let mut response = to_hyper(answer);
            if unread_body {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            response
        };
        let store = &*self.backends.store;
        if let Some(answer) = operations::handle(
            self.operations.as_deref(),
            store,
            &parts.method,
            parts.uri.path(),
        )
        .await
        {
            return early(answer);
        }
        let early = |error: ApiError| early(error.into_response());
        let route = match Route::resolve(&parts.method, parts.uri.path()) {
            Ok(route) => route,
            Err(error) => return early(error),
        };
        let body = match read_body(body, self.body_read_timeout).await {
            Ok(body) => body,
            Err(error) => return early(error),
        };
        let answer = if route.function() == Function::Ingest {
            ingest::accept_body(&*self.backends.queue, &body).await
        } else {
            match api_gateway_request(
                parts.method,
                parts.uri.path(),
                parts.uri.query(),
                parts.headers,
                Vec::from(body),
            ) {
                Ok(request) => query::handle(&*self.backends.store, route, request).await,
                Err(error) => Err(error),
            }
        };
        to_hyper(answer.unwrap_or_else(ApiError::into_response))
    }
}

/// Bytes a second a body must keep arriving at, after a second's grace: a client that sends a
/// byte every few seconds cannot hold a connection for the whole body timeout, which a flood
/// of them would turn into every connection the server has.
const BODY_RATE_FLOOR: f64 = 1024.0;

/// A request's whole body, within API Gateway's size limit, arriving at no less than
/// [`BODY_RATE_FLOOR`] and within `timeout` in all.
async fn read_body(mut body: Incoming, timeout: Duration) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let started = tokio::time::Instant::now();
    let mut collected = Vec::new();
    loop {
        let earned = Duration::from_secs_f64(1.0 + collected.len() as f64 / BODY_RATE_FLOOR);
        let deadline = started + earned.min(timeout);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return Ok(Bytes::from(collected)),
            Ok(Some(Err(error))) => {
                return Err(ApiError::Invalid(ValidationError::Malformed {
                    field: "body",
                    detail: format!("the request body could not be read: {error}"),
                }));
            }
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    seconds: started.elapsed().as_secs().max(1),
                });
            }
        };
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > GATEWAY_BODY_LIMIT {
                return Err(ApiError::PayloadTooLarge {
                    limit: GATEWAY_BODY_LIMIT,
                });
            }
            collected.extend_from_slice(&data);
        }
    }
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
