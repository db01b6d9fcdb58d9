//! The whole pipeline over HTTP on embedded backends: the local server on a random port, many
//! rockets' messages shuffled, duplicated and posted from several threads, every rocket checked
//! against the in-order fold.

mod support;

use std::time::{Duration, Instant};

use std::sync::Arc;

use rockets::message::{Envelope, MessageNumber};
use rockets::ports::QueuedMessage;
use rockets_embedded::QueueDepth;
use rockets_local::LocalServer;
use rockets_testkit::{HttpClient, Rng, channel, flight};
use support::{
    OutageStore, TestApp, assert_converges, post_all, post_concurrently_and_converge, traffic,
};

async fn start(visibility: Duration, max_receive_count: u32) -> LocalServer {
    TestApp::new()
        .queue(visibility, max_receive_count)
        .spawn()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_concurrent_posts_converge_to_the_in_order_fold() {
    let server = start(Duration::from_secs(30), 5).await;
    let addr = server.addr();
    let (flights, arrivals) = traffic(50, 40, 2026);
    let rockets = flights.len();
    tokio::task::spawn_blocking(move || {
        post_concurrently_and_converge(addr, 8, &flights, arrivals);
        let mut client = HttpClient::new(addr);
        let (status, body) = client.request("GET", "/rockets?limit=1000", "").unwrap();
        assert_eq!(status, 200);
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed["rockets"].as_array().unwrap().len(), rockets);
    })
    .await
    .unwrap();

    let queue = &server.embedded_queue.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.depth() != QueueDepth::default() {
        assert!(
            Instant::now() < deadline,
            "queue not drained: {:?}",
            queue.depth()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_blocks_its_channel_only_until_it_reaches_the_dead_letter_queue() {
    let server = start(Duration::from_millis(100), 2).await;
    let addr = server.addr();
    let queue = server.embedded_queue.as_ref().unwrap().clone();
    let c = channel("poisoned");
    let flight = flight(&c, 3, &mut Rng::new(1));

    queue.send_message(QueuedMessage::of(&flight[0]));
    queue.send_message(QueuedMessage {
        group_id: c.to_string(),
        deduplication_id: "poison".into(),
        body: "{\"metadata\":\"not what apply expects\"}".into(),
    });
    let rest = flight[1..].to_vec();
    tokio::task::spawn_blocking(move || post_all(addr, rest))
        .await
        .unwrap();

    let flights = vec![flight];
    tokio::task::spawn_blocking(move || assert_converges(addr, &flights))
        .await
        .unwrap();
    assert_eq!(queue.depth().dead, 1);
    assert!(queue.dead_letters()[0].contains("not what apply expects"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_longer_than_the_receives_allow_dead_letters_nothing() {
    // Four receives 100 ms apart would dead-letter every message within half a second; backing
    // off (100 ms, 400 ms, 1.6 s before the fourth) outlasts an outage of a second and a half.
    let store = Arc::new(OutageStore::lasting(Duration::from_millis(1_500)));
    let (server, queue) = TestApp::new()
        .queue(Duration::from_millis(100), 4)
        .spawn_with_store(store.clone())
        .await;
    let addr = server.addr();
    let (flights, arrivals) = traffic(5, 6, 11);
    tokio::task::spawn_blocking(move || {
        post_concurrently_and_converge(addr, 2, &flights, arrivals)
    })
    .await
    .unwrap();
    assert_eq!(queue.depth().dead, 0, "{:?}", queue.dead_letters());
    assert!(
        tokio::time::Instant::now() >= store.ends,
        "applied only once the store was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_and_redrives_dead_letters_over_http_and_the_rocket_completes() {
    let mut app = TestApp::new();
    app.config.apply.park_limit = 3;
    let server = app.spawn().await;
    let addr = server.addr();
    let c = channel("operated");
    let messages = flight(&c, 5, &mut Rng::new(11));
    tokio::task::spawn_blocking(move || {
        let mut client = HttpClient::new(addr);
        let json = |client: &mut HttpClient, method, path: &str| {
            let (status, body) = client.request(method, path, "").unwrap();
            assert_eq!(status, 200, "{method} {path}: {body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        };
        // Without message 1, 2 and 3 park and 4 and 5 lie past the park limit.
        post_all(addr, messages[1..].to_vec());
        let deadline = Instant::now() + Duration::from_secs(10);
        while json(&mut client, "GET", "/local/queue")["deadLetters"] != 2 {
            assert!(Instant::now() < deadline, "no dead letters");
            std::thread::sleep(Duration::from_millis(20));
        }
        let letters = json(&mut client, "GET", "/local/dead-letters");
        let numbers: Vec<u64> = letters["deadLetters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["metadata"]["messageNumber"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers.len(), 2);
        // Fill the gap, then redrive: the rocket completes, each message applied once.
        post_all(addr, messages[..1].to_vec());
        assert_eq!(
            json(&mut client, "POST", "/local/dead-letters/redrive")["moved"],
            2
        );
        assert_converges(addr, &[messages]);
        let queue = json(&mut client, "GET", "/local/queue");
        assert_eq!(queue["deadLetters"], 0);
        let events = json(&mut client, "GET", "/rockets/operated/events");
        assert_eq!(events["events"].as_array().unwrap().len(), 5);
    })
    .await
    .unwrap();
}

/// The attack on the park limit: while a victim sends its flight out of order, someone else
/// posts 10,000 messages numbered far ahead on the victim's channel, and a few inside its park
/// window. None of the victim's messages is dead-lettered, the junk far ahead all is, and once
/// the junk inside the window expires the victim's `pendingMessages` is its true value again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_ahead_flood_takes_none_of_the_victims_messages_and_junk_expires() {
    let mut app = TestApp::new();
    app.config.apply.parked_retention = Duration::from_secs(1);
    let server = app.spawn().await;
    let addr = server.addr();
    let c = channel("victim");
    let mut rng = Rng::new(29);
    let mut victim = flight(&c, 201, &mut rng);
    let last = victim.pop().unwrap();
    let mut shuffled = victim.clone();
    rng.shuffle(&mut shuffled);
    let junk = |number: u64| {
        let mut message = victim[1].clone();
        message.number = MessageNumber::new(number).unwrap();
        message
    };
    let far: Vec<Envelope> = (0..10_000).map(|i| junk(1_000_000_000_000 + i)).collect();
    let near: Vec<Envelope> = (500..505).map(junk).collect();
    tokio::task::spawn_blocking(move || {
        let attackers: Vec<_> = far
            .chunks(2_500)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || post_all(addr, chunk))
            })
            .collect();
        post_all(addr, near);
        post_all(addr, shuffled);
        for attacker in attackers {
            attacker.join().unwrap();
        }
        let mut client = HttpClient::new(addr);
        let json = |client: &mut HttpClient, path: &str| {
            let (status, body) = client.request("GET", path, "").unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let dead = loop {
            let queue = json(&mut client, "/local/queue");
            let rocket = json(&mut client, "/rockets/victim");
            if queue["deadLetters"] == 10_000 && rocket["lastMessageNumber"] == 200 {
                break json(&mut client, "/local/dead-letters");
            }
            assert!(Instant::now() < deadline, "{queue} {rocket}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let victims = dead["deadLetters"].as_array().unwrap().iter();
        let numbers = victims.filter_map(|m| m["metadata"]["messageNumber"].as_u64());
        assert!(numbers.clone().all(|n| n >= 1_000_000_000_000));
        assert_eq!(
            numbers.count(),
            10_000,
            "no message of the victim's among them"
        );
        // The junk inside the window is all that is parked; it expires at the next load.
        assert_eq!(json(&mut client, "/rockets/victim")["pendingMessages"], 5);
        std::thread::sleep(Duration::from_millis(1_200));
        post_all(addr, vec![last.clone()]);
        let mut whole = victim.clone();
        whole.push(last);
        assert_converges(addr, &[whole]);
        let parked = json(&mut client, "/local/rockets/victim/parked");
        assert_eq!(parked, serde_json::json!({"parked": []}));
    })
    .await
    .unwrap();
}
