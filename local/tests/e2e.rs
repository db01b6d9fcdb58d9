//! The whole pipeline over HTTP: the local server on a random port, many rockets' messages
//! shuffled, duplicated and posted from several threads, every rocket checked against the
//! in-order fold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::embedded::{QueueConfig, QueueDepth};
use rockets::message::Envelope;
use rockets::ports::QueuedMessage;
use rockets::rocket::Rocket;
use rockets::testing::{HttpClient, Rng, channel, flight};
use rockets_local::{LocalConfig, LocalServer, start_embedded};

async fn start(visibility: Duration, max_receive_count: u32) -> LocalServer {
    let config = LocalConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        pollers: 4,
        batch_size: 10,
        queue: QueueConfig {
            visibility_timeout: visibility,
            max_receive_count,
            ..QueueConfig::default()
        },
    };
    start_embedded(&config).await.expect("server starts")
}

/// Posts every message, resending on any non-2xx as the challenge's program does.
fn post_all(addr: std::net::SocketAddr, messages: Vec<Envelope>) {
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
fn assert_converges(addr: std::net::SocketAddr, flights: &[Vec<Envelope>]) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_concurrent_posts_converge_to_the_in_order_fold() {
    let server = start(Duration::from_secs(30), 5).await;
    let addr = server.addr();
    let mut rng = Rng::new(2026);
    let flights: Vec<Vec<Envelope>> = (0..50)
        .map(|i| {
            let len = 1 + rng.below(40);
            flight(&channel(&format!("e2e-{i}")), len, &mut rng)
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

    let flights = Arc::new(flights);
    tokio::task::spawn_blocking(move || {
        let threads: Vec<_> = arrivals
            .chunks(arrivals.len().div_ceil(8))
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || post_all(addr, chunk))
            })
            .collect();
        for thread in threads {
            thread.join().expect("poster thread");
        }
        assert_converges(addr, &flights);

        let mut client = HttpClient::new(addr);
        let (status, body) = client.request("GET", "/rockets?limit=1000", "").unwrap();
        assert_eq!(status, 200);
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed["rockets"].as_array().unwrap().len(), flights.len());
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
