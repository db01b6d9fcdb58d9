//! The whole pipeline over HTTP on embedded backends: the local server on a random port, many
//! rockets' messages shuffled, duplicated and posted from several threads, every rocket checked
//! against the in-order fold.

mod support;

use std::time::{Duration, Instant};

use rockets::embedded::{QueueConfig, QueueDepth};
use rockets::ports::QueuedMessage;
use rockets::testing::{HttpClient, Rng, channel, flight};
use rockets_local::{LocalConfig, LocalServer, start_embedded};
use support::{assert_converges, post_all, post_concurrently_and_converge, traffic};

async fn start(visibility: Duration, max_receive_count: u32) -> LocalServer {
    let config = LocalConfig {
        queue: QueueConfig {
            visibility_timeout: visibility,
            max_receive_count,
            ..QueueConfig::default()
        },
        ..LocalConfig::ephemeral()
    };
    start_embedded(&config).await.expect("server starts")
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

    let queue = &server.embedded.as_ref().unwrap().queue;
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
    let queue = server.embedded.as_ref().unwrap().queue.clone();
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
