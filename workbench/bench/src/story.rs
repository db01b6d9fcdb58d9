//! `GET /rockets/{channel}?asOf=N`: a rocket's state as of message N, folded from its history,
//! for N = 10,000, through the query handler, on the embedded store and on DynamoDB Local.

use std::fmt::Write as _;
use std::time::Instant;

use chrono::Utc;
use lambda_http::http::{HeaderMap, Method};
use rockets::message::Envelope;
use rockets::ordering::Timeline;
use rockets::ports::{ChannelStore, RocketReader};
use rockets_aws::{DynamoStore, emulator_config};
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, flight, unique_name};

use crate::mark;
use crate::stats::quantile;

/// Applies `messages`, in order, a hundred a commit.
async fn fill<S: ChannelStore>(store: &S, messages: &[Envelope]) {
    for (version, chunk) in (0u64..).zip(messages.chunks(100)) {
        let rocket = match store.load(&chunk[0].channel, 0, &[]).await.expect("load") {
            Some(snapshot) => Timeline::load(snapshot.rocket, snapshot.parked, Utc::now()),
            None => Timeline::empty(chunk[0].channel.clone(), Utc::now()),
        };
        let mut timeline = rocket;
        for message in chunk {
            timeline.receive(message.clone());
        }
        let change = timeline.into_change().expect("applies");
        store.commit(version, &change).await.expect("commit");
    }
}

/// Milliseconds for `GET /rockets/{channel}?asOf=n` through the query handler, `samples`
/// times: p50 and p99.
async fn time<R: RocketReader>(reader: &R, channel: &str, n: u64, samples: usize) -> (f64, f64) {
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let request = rockets::http::api_gateway_request(
            Method::GET,
            &format!("/rockets/{channel}"),
            Some(&format!("asOf={n}")),
            HeaderMap::new(),
            Vec::new(),
        )
        .expect("a convertible request");
        let begun = Instant::now();
        let response = rockets::http::respond(
            |route, request| query::handle(reader, route, request),
            request,
        )
        .await;
        took.push(begun.elapsed().as_secs_f64() * 1e3);
        assert_eq!(response.status(), 200);
    }
    (quantile(&mut took, 0.5), quantile(&mut took, 0.99))
}

pub fn report(quick: bool) -> String {
    let n: u64 = if quick { 1_000 } else { 10_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = String::from("| store | N | p50 (ms) | p99 (ms) |\n|---|---|---|---|\n");
    let messages = flight(&rockets_testkit::channel("story"), n, &mut Rng::new(n));
    let embedded = runtime.block_on(async {
        let store = EmbeddedStore::new();
        fill(&store, &messages).await;
        time(&store, "story", n, if quick { 50 } else { 200 }).await
    });
    let _ = writeln!(
        out,
        "| embedded | {n} | {:.2} | {:.2} |",
        embedded.0, embedded.1
    );
    match std::env::var("ROCKETS_TEST_DYNAMODB_LOCAL") {
        Ok(endpoint) => {
            let dynamodb = runtime.block_on(async {
                let client = aws_sdk_dynamodb::Client::new(&emulator_config(&endpoint).await);
                let table = unique_name("story");
                rockets_aws::provision::ensure_table(&client, &table)
                    .await
                    .expect("table");
                let store = DynamoStore::new(client, table);
                fill(&store, &messages).await;
                time(&store, "story", n, if quick { 5 } else { 20 }).await
            });
            let _ = writeln!(
                out,
                "| DynamoDB Local | {n} | {:.1} | {:.1} |",
                dynamodb.0, dynamodb.1
            );
        }
        Err(_) => {
            out.push_str("| DynamoDB Local | not measured: the emulators are not running | | |\n")
        }
    }
    let _ = writeln!(
        out,
        "\nA rocket of {n} messages, and its state as of the last of them: the whole history read \
         a thousand messages a page and folded, through the query handler, without HTTP. Target: \
         p99 under 5 ms on the embedded store: {}. On DynamoDB each page of the history is a \
         Query of about 300 KB (about 40 read units, eventually consistent), so N = 10,000 is ten \
         round trips.",
        mark(embedded.1 < 5.0)
    );
    out
}
