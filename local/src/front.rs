//! The HTTP front door: loopback listeners, one hyper HTTP/1 connection per accepted socket,
//! and the limits a production front has.
//!
//! - A header-read timeout, so a client that sends its headers a byte at a time cannot hold a
//!   connection, and a body-read timeout for the same reason.
//! - An idle timeout for keep-alive connections.
//! - A cap on open connections, below the open-file limit. Near the cap the longest-idle
//!   connections are closed to make room, as nginx reclaims idle keep-alive connections, so a
//!   client that opens a connection per request and never closes any (the challenge's own test
//!   program) is served indefinitely. A connection is idle whenever no request of it is being
//!   handled, including a fresh one whose first request has not arrived.
//! - Accept errors back off instead of spinning, and running out of file descriptors reclaims
//!   idle connections.
//! - Graceful shutdown: stop accepting, close idle connections, let requests in flight finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};

/// Serves one request; the local server's API implements it.
pub trait Handler: Send + Sync + 'static {
    fn call(
        &self,
        request: hyper::Request<Incoming>,
    ) -> impl Future<Output = hyper::Response<Full<Bytes>>> + Send;
}

/// Connection limits and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontConfig {
    /// From a connection's first byte, or the end of its previous request, to the end of the
    /// request's headers.
    pub header_read_timeout: Duration,
    /// To read a request's whole body once its headers are in.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// On shutdown, how long requests in flight may take before they are cut off.
    pub shutdown_grace: Duration,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            max_connections: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept back from connections for everything else the process opens.
const RESERVED_FDS: u64 = 128;
/// Connections at most when the open-file limit would allow more: each holds buffers and a
/// task, and idle ones are reclaimed long before this many are useful.
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

impl FrontConfig {
    /// The connection cap in force: the configured one, or what the open-file limit allows.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = crate::limits::open_files().unwrap_or(1024);
            files
                .saturating_sub(RESERVED_FDS)
                .clamp(16, DEFAULT_MAX_CONNECTIONS) as usize
        })
    }
}

/// What the front has seen, for the activity summary and benchmarks.
#[derive(Default, Debug)]
pub struct FrontStats {
    pub open: AtomicUsize,
    pub peak_open: AtomicUsize,
    pub accepted: AtomicU64,
    pub reclaimed: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// A connection as the registry sees it.
struct Tracked {
    /// Milliseconds since the registry's epoch when the connection last became idle, or
    /// [`BUSY`] while a request is being handled.
    idle_since: AtomicU64,
    /// Set once the connection has been asked to close, so it is not picked twice.
    closing: AtomicBool,
    close: Notify,
}

const BUSY: u64 = u64::MAX;

/// Every open connection, so that idle ones can be found and closed.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    /// Connections asked to close that have not closed yet.
    closing: AtomicUsize,
    stats: Arc<FrontStats>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(&self) -> (u64, Arc<Tracked>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked {
            idle_since: AtomicU64::new(self.now_ms()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        let open = {
            let mut map = self.open.lock().expect("registry lock");
            map.insert(id, tracked.clone());
            map.len()
        };
        self.stats.open.store(open, Ordering::Relaxed);
        self.stats.peak_open.fetch_max(open, Ordering::Relaxed);
        (id, tracked)
    }

    fn unregister(&self, id: u64, tracked: &Tracked) {
        let open = {
            let mut map = self.open.lock().expect("registry lock");
            map.remove(&id);
            map.len()
        };
        self.stats.open.store(open, Ordering::Relaxed);
        if tracked.closing.load(Ordering::Relaxed) {
            self.closing.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Asks `tracked` to close; false if it already was.
    fn ask_to_close(&self, tracked: &Tracked) -> bool {
        if tracked.closing.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.closing.fetch_add(1, Ordering::Relaxed);
        tracked.close.notify_one();
        true
    }

    /// Closes up to `count` of the longest-idle connections; returns how many it asked.
    fn reclaim_idle(&self, count: usize) -> usize {
        let mut idle: Vec<(u64, Arc<Tracked>)> = {
            let map = self.open.lock().expect("registry lock");
            map.values()
                .filter(|t| !t.closing.load(Ordering::Relaxed))
                .filter_map(|t| {
                    let since = t.idle_since.load(Ordering::Relaxed);
                    (since != BUSY).then(|| (since, t.clone()))
                })
                .collect()
        };
        if idle.len() > count {
            idle.select_nth_unstable_by_key(count, |(since, _)| *since);
            idle.truncate(count);
        }
        let asked = idle
            .iter()
            .filter(|(_, tracked)| self.ask_to_close(tracked))
            .count();
        self.stats
            .reclaimed
            .fetch_add(asked as u64, Ordering::Relaxed);
        asked
    }

    fn close_all(&self) {
        let all: Vec<Arc<Tracked>> = self
            .open
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        for tracked in all {
            self.ask_to_close(&tracked);
        }
    }
}

/// The running front: its listeners' addresses and what stops it.
pub struct Front {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    registry: Arc<Registry>,
    permits: Arc<Semaphore>,
    cap: usize,
    config: FrontConfig,
    pub stats: Arc<FrontStats>,
}

impl Front {
    /// Starts accepting on every listener; the first one's address is the primary.
    pub fn start<H: Handler>(
        listeners: Vec<TcpListener>,
        handler: Arc<H>,
        config: FrontConfig,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> std::io::Result<Front> {
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        let cap = config.connection_cap();
        let stats = Arc::new(FrontStats::default());
        let registry = Arc::new(Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            closing: AtomicUsize::new(0),
            stats: stats.clone(),
        });
        let permits = Arc::new(Semaphore::new(cap));
        let (shutdown, _) = watch::channel(false);
        for listener in listeners {
            tasks.spawn(accept_loop(
                listener,
                handler.clone(),
                config,
                cap,
                registry.clone(),
                permits.clone(),
                shutdown.subscribe(),
            ));
        }
        Ok(Front {
            addrs,
            shutdown,
            registry,
            permits,
            cap,
            config,
            stats,
        })
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn connection_cap(&self) -> usize {
        self.cap
    }

    /// How long a shutdown waits for work in flight.
    pub fn grace(&self) -> Duration {
        self.config.shutdown_grace
    }

    /// Stops accepting, closes idle connections, and waits until requests in flight are
    /// answered or the grace period ends. True if every connection closed in time.
    pub async fn shutdown(&self) -> bool {
        let _ = self.shutdown.send(true);
        self.registry.close_all();
        let all = u32::try_from(self.cap).unwrap_or(u32::MAX);
        tokio::time::timeout(self.config.shutdown_grace, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Below this many free connection slots, idle connections are reclaimed.
fn low_water(cap: usize) -> usize {
    (cap / 8).max(1)
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: FrontConfig,
    cap: usize,
    registry: Arc<Registry>,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        // Reclaim a batch at a time, back up to twice the low-water mark, so the scan for idle
        // connections runs once per batch of accepts rather than on each.
        let free = permits.available_permits() + registry.closing.load(Ordering::Relaxed);
        if free < low_water(cap) {
            registry.reclaim_idle(2 * low_water(cap) - free);
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(error) => {
                registry.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_out_of_files(&error) {
                    registry.reclaim_idle(low_water(cap));
                }
                backoff.wait(&error).await;
                continue;
            }
        };
        registry.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (id, tracked) = registry.register();
        let handler = handler.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, handler, &tracked, &registry, config, shutdown).await;
            registry.unregister(id, &tracked);
            drop(permit);
        });
    }
}

fn is_out_of_files(error: &std::io::Error) -> bool {
    // EMFILE and ENFILE: the process's or the system's file table is full.
    matches!(error.raw_os_error(), Some(24) | Some(23))
}

/// Waits after an accept error, longer each time in a row, and logs at most once a second.
#[derive(Default)]
struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    async fn wait(&mut self, error: &std::io::Error) {
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(%error, errors = self.unlogged, "accept failed; backing off");
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        tokio::time::sleep(self.delay).await;
    }
}

/// Serves one connection until it closes, is idle too long, or is asked to close.
async fn serve<H: Handler>(
    stream: TcpStream,
    handler: Arc<H>,
    tracked: &Arc<Tracked>,
    registry: &Arc<Registry>,
    config: FrontConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = {
        let tracked = tracked.clone();
        let registry = registry.clone();
        service_fn(move |request| {
            let tracked = tracked.clone();
            let registry = registry.clone();
            let handler = handler.clone();
            async move {
                tracked.idle_since.store(BUSY, Ordering::Relaxed);
                let response = handler.call(request).await;
                tracked
                    .idle_since
                    .store(registry.now_ms(), Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service)
    );
    let idle_ms = config.idle_timeout.as_millis() as u64;
    let mut closing = false;
    loop {
        let idle_deadline = match tracked.idle_since.load(Ordering::Relaxed) {
            BUSY => idle_ms,
            since => (since + idle_ms).saturating_sub(registry.now_ms()),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = tracked.close.notified(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(Duration::from_millis(idle_deadline)), if !closing => {
                let since = tracked.idle_since.load(Ordering::Relaxed);
                if since != BUSY && registry.now_ms().saturating_sub(since) >= idle_ms {
                    registry.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    if registry.ask_to_close(tracked) {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}
