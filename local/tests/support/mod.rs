//! Helpers shared by the tests that run the local server: [`TestApp`] starts one on a random
//! port with what a test needs, and the rest drive it over HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::listing::{ListQuery, RocketPage};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::ChannelChange;
use rockets::ports::{
    ChannelSnapshot, ChannelStore, CommitOutcome, MessageQueue, RocketReader, StoreError,
};
use rockets::rocket::Rocket;
use rockets_aws::{DynamoStore, SqsQueue};
use rockets_embedded::{DeadLetters, EmbeddedQueue, QueueConfig};
use rockets_local::front::FrontConfig;
use rockets_local::{Backends, Listen, LocalConfig, LocalServer};
use rockets_testkit::{HttpClient, Rng, channel, flight};

/// A fresh table, named after `prefix`, on the DynamoDB at `endpoint` (an emulator).
pub async fn dynamodb(endpoint: &str, prefix: &str) -> DynamoStore {
    let config = rockets_aws::emulator_config(endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = rockets_testkit::unique_name(prefix);
    rockets_aws::provision::ensure_table(&client, &table)
        .await
        .expect("table created");
    DynamoStore::new(client, table)
}

/// A directory of its own for one test, under the system's temporary directory; removed
/// when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(rockets_testkit::unique_name(name));
        let _ = std::fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local server for one test: on 127.0.0.1 and a port the system picks, with the
/// template's settings unless the test changes them; logs shown when `TEST_LOG` is set.
pub struct TestApp {
    pub config: LocalConfig,
}

impl TestApp {
    pub fn new() -> Self {
        rockets_testkit::init_test_logs();
        TestApp {
            config: LocalConfig {
                // A name the developer allows, as ROCKETS_ALLOWED_HOSTS does, so that raw
                // requests can name it in `Host`.
                allowed_hosts: vec!["x".into()],
                ..LocalConfig::ephemeral()
            },
        }
    }

    /// Failed records come back after `visibility`, and go to the dead-letter queue after
    /// `max_receive_count` receives.
    pub fn queue(mut self, visibility: Duration, max_receive_count: u32) -> Self {
        self.config.queue = QueueConfig {
            visibility_timeout: visibility,
            max_receive_count,
            ..QueueConfig::default()
        };
        self
    }

    pub fn cors(mut self, cors: rockets_local::cors::Cors) -> Self {
        self.config.cors = cors;
        self
    }

    pub fn front(mut self, front: FrontConfig) -> Self {
        self.config.front = front;
        self
    }

    pub fn listen(mut self, listen: Listen) -> Self {
        self.config.listen = listen;
        self
    }

    /// On the embedded queue and store.
    pub async fn spawn(self) -> LocalServer {
        rockets_local::start_embedded(&self.config)
            .await
            .expect("server starts")
    }

    /// On the embedded queue and `store`; returns the queue too.
    pub async fn spawn_with_store<S>(self, store: Arc<S>) -> (LocalServer, Arc<EmbeddedQueue>)
    where
        S: ChannelStore + RocketReader + 'static,
    {
        let queue = Arc::new(EmbeddedQueue::new(self.config.queue));
        let backends = Backends {
            queue: queue.clone(),
            store,
        };
        let dead_letters = Arc::new(DeadLetters(queue.clone()));
        let server = rockets_local::start(
            &self.config,
            backends.clone(),
            backends,
            dead_letters,
            Some(queue.clone()),
        )
        .await
        .expect("server starts");
        (server, queue)
    }

    /// On SQS and DynamoDB (an emulator's).
    pub async fn spawn_aws<D: MessageQueue + 'static>(
        self,
        queue: SqsQueue,
        dead_letters: D,
        store: DynamoStore,
    ) -> LocalServer {
        rockets_local::start_aws(&self.config, queue, dead_letters, store)
            .await
            .expect("server starts")
    }
}

/// Posts every message, resending on any non-2xx as the challenge's program does.
pub fn post_all(addr: SocketAddr, messages: Vec<Envelope>) {
    let mut client = HttpClient::new(addr);
    for message in messages {
        let body = message.to_json();
        for attempt in 0.. {
            assert!(attempt < 50, "message never accepted");
            match client.request("POST", "/messages", &body) {
                Ok((202, _)) => break,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn rocket(client: &mut HttpClient, channel: &str) -> Option<Rocket> {
    match client
        .request("GET", &format!("/rockets/{channel}"), "")
        .unwrap()
    {
        (200, body) => Some(serde_json::from_str(&body).unwrap()),
        _ => None,
    }
}

/// Waits until every flight's rocket is fully applied, then checks it against the fold.
pub fn assert_converges(addr: SocketAddr, flights: &[Vec<Envelope>]) {
    let mut client = HttpClient::new(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    for flight in flights {
        let c = &flight[0].channel;
        let expected = Rocket::fold(c.clone(), flight, Utc::now());
        loop {
            let got = rocket(&mut client, c.as_str());
            if let Some(got) = &got
                && got.last_message_number == expected.last_message_number
            {
                assert!(got.same_state(&expected), "{got:?}\n!=\n{expected:?}");
                assert_eq!(got.pending_messages, 0);
                break;
            }
            assert!(Instant::now() < deadline, "{c} never converged: {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Many rockets' flights, and every message of them shuffled with about a quarter resent.
pub fn traffic(rockets: usize, max_len: u64, seed: u64) -> (Vec<Vec<Envelope>>, Vec<Envelope>) {
    let mut rng = Rng::new(seed);
    let flights: Vec<Vec<Envelope>> = (0..rockets)
        .map(|i| {
            let len = 1 + rng.below(max_len);
            flight(&channel(&format!("e2e-{seed}-{i}")), len, &mut rng)
        })
        .collect();
    let mut arrivals: Vec<Envelope> = flights.iter().flatten().cloned().collect();
    let originals = arrivals.len();
    for i in 0..originals {
        if rng.chance(25) {
            arrivals.push(arrivals[i].clone());
        }
    }
    rng.shuffle(&mut arrivals);
    (flights, arrivals)
}

/// Posts `arrivals` from `threads` threads at once, then waits for every flight to converge.
pub fn post_concurrently_and_converge(
    addr: SocketAddr,
    threads: usize,
    flights: &[Vec<Envelope>],
    arrivals: Vec<Envelope>,
) {
    let posters: Vec<_> = arrivals
        .chunks(arrivals.len().div_ceil(threads))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || post_all(addr, chunk))
        })
        .collect();
    for poster in posters {
        poster.join().expect("poster thread");
    }
    assert_converges(addr, flights);
}

/// The embedded store, unavailable to the apply side until `ends` on tokio's clock (the real
/// one, or a paused one), as a table in an outage answers (throttled, unreachable, failing).
pub struct OutageStore {
    inner: rockets_embedded::EmbeddedStore,
    pub ends: tokio::time::Instant,
    met: std::sync::atomic::AtomicBool,
}

impl OutageStore {
    /// An outage from now on, `lasting` this long.
    pub fn lasting(lasting: Duration) -> Self {
        OutageStore {
            inner: rockets_embedded::EmbeddedStore::new(),
            ends: tokio::time::Instant::now() + lasting,
            met: Default::default(),
        }
    }

    /// Whether anything asked the store during the outage.
    pub fn was_met(&self) -> bool {
        self.met.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), StoreError> {
        if tokio::time::Instant::now() < self.ends {
            self.met.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(StoreError::Unavailable("the table is in an outage".into()));
        }
        Ok(())
    }
}

impl ChannelStore for OutageStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        self.check()?;
        self.inner.load(channel, window, probe).await
    }

    async fn commit(
        &self,
        version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.check()?;
        self.inner.commit(version, change).await
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        self.check()?;
        self.inner.applied(channel, numbers).await
    }
}

impl RocketReader for OutageStore {
    async fn rocket(&self, channel: &Channel) -> Result<Option<Rocket>, StoreError> {
        self.inner.rocket(channel).await
    }

    async fn rockets(&self, query: &ListQuery) -> Result<RocketPage, StoreError> {
        self.inner.rockets(query).await
    }

    async fn history(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, StoreError> {
        self.inner.history(channel, after, limit).await
    }
}

/// The messages visible and in flight in the SQS queue at `url`, as its attributes count them.
pub async fn sqs_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName::{
        ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible,
    };
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(ApproximateNumberOfMessages)
        .attribute_names(ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name| {
        attributes
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        count(ApproximateNumberOfMessages),
        count(ApproximateNumberOfMessagesNotVisible),
    )
}
