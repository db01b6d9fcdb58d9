use std::cmp::Ordering;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use lambda_http::http::{HeaderMap, Method};
use rockets::ordering::Timeline;
use rockets::ports::ChannelStore;
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, channel, flight};
use serde_json::{Value, json};

const SORT_KEYS: [&str; 8] = [
    "channel",
    "type",
    "mission",
    "speed",
    "status",
    "launchTime",
    "lastMessageTime",
    "lastMessageNumber",
];

/// Rockets in every state: launched, exploded, and pending ones that wait on a gap.
async fn fleet(size: usize, seed: u64) -> EmbeddedStore {
    let store = EmbeddedStore::new();
    let mut rng = Rng::new(seed);
    for i in 0..size {
        let c = channel(&format!("rocket-{:03}", rng.below(1000) * 1000 + i as u64));
        // At least two, so that one with its first message withheld still exists.
        let messages = flight(&c, 2 + rng.below(7), &mut rng);
        let mut timeline = Timeline::empty(c, Utc::now());
        let skip_first = rng.chance(15);
        for m in messages.into_iter().skip(usize::from(skip_first)) {
            timeline.receive(m);
        }
        if let Some(change) = timeline.into_change() {
            store.commit(0, &change).await.unwrap();
        }
    }
    store
}

async fn get(store: &EmbeddedStore, path_and_query: &str) -> (u16, Value) {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let request =
        rockets::http::api_gateway_request(Method::GET, path, query, HeaderMap::new(), Vec::new())
            .expect("a convertible request");
    let response = rockets::http::respond(
        |route, request| query::handle(store, route, request),
        request,
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = serde_json::from_slice(response.body().as_ref()).unwrap();
    (response.status().as_u16(), body)
}

/// Walks every page of a listing; returns the rockets in the order served.
async fn walk(store: &EmbeddedStore, params: &str, limit: usize) -> Vec<Value> {
    let mut rockets = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/rockets?{params}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = get(store, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        let page = body["rockets"].as_array().unwrap();
        assert!(page.len() <= limit);
        rockets.extend(page.iter().cloned());
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return rockets,
        }
    }
}

/// The test's own reading of the sort order, independent of the implementation's.
fn compare(key: &str, a: &Value, b: &Value) -> Ordering {
    fn time(v: &Value) -> Option<DateTime<Utc>> {
        v.as_str()
            .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }
    fn status_rank(v: &Value) -> u8 {
        match v.as_str().unwrap() {
            "pending" => 0,
            "launched" => 1,
            _ => 2,
        }
    }
    let by_value = match key {
        "channel" => Ordering::Equal,
        "type" | "mission" => a[key].as_str().cmp(&b[key].as_str()),
        "speed" | "lastMessageNumber" => a[key].as_i64().cmp(&b[key].as_i64()),
        "status" => status_rank(&a[key]).cmp(&status_rank(&b[key])),
        _ => time(&a[key]).cmp(&time(&b[key])),
    };
    by_value.then_with(|| a["channel"].as_str().cmp(&b["channel"].as_str()))
}

#[tokio::test]
async fn every_sort_key_both_ways_walks_every_rocket_once_in_order() {
    let store = fleet(60, 7).await;
    let (_, all) = get(&store, "/rockets?limit=1000").await;
    let everyone: HashSet<String> = all["rockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(everyone.len(), 60);

    for key in SORT_KEYS {
        for order in ["asc", "desc"] {
            for status in [None, Some("pending"), Some("launched"), Some("exploded")] {
                let mut params = format!("sortBy={key}&order={order}");
                if let Some(s) = status {
                    params.push_str(&format!("&status={s}"));
                }
                let rockets = walk(&store, &params, 7).await;
                let channels: Vec<&str> = rockets
                    .iter()
                    .map(|r| r["channel"].as_str().unwrap())
                    .collect();
                let unique: HashSet<&str> = channels.iter().copied().collect();
                assert_eq!(
                    unique.len(),
                    channels.len(),
                    "{params}: a rocket appeared twice"
                );
                let expected = all["rockets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| status.is_none_or(|s| r["status"] == s))
                    .count();
                assert_eq!(
                    channels.len(),
                    expected,
                    "{params}: not every rocket was listed"
                );
                for pair in rockets.windows(2) {
                    let ordering = compare(key, &pair[0], &pair[1]);
                    let wanted = if order == "asc" {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                    assert_eq!(ordering, wanted, "{params}: {} then {}", pair[0], pair[1]);
                }
            }
        }
    }
}

#[tokio::test]
async fn nulls_sort_first_ascending_and_last_descending() {
    let store = fleet(60, 3).await;
    let asc = walk(&store, "sortBy=launchTime&order=asc", 100).await;
    let desc = walk(&store, "sortBy=launchTime&order=desc", 100).await;
    assert!(
        asc.first().unwrap()["launchTime"].is_null(),
        "fixture has pending rockets"
    );
    assert!(desc.last().unwrap()["launchTime"].is_null());
    let reversed: Vec<_> = desc.into_iter().rev().collect();
    assert_eq!(asc, reversed, "desc is the exact reverse of asc");
}

#[tokio::test]
async fn defaults_are_channel_order_and_a_hundred_per_page() {
    let store = fleet(150, 11).await;
    let (status, body) = get(&store, "/rockets").await;
    assert_eq!(status, 200);
    let page = body["rockets"].as_array().unwrap();
    assert_eq!(page.len(), 100);
    assert!(
        page.windows(2)
            .all(|w| w[0]["channel"].as_str() < w[1]["channel"].as_str())
    );
    assert!(body["nextCursor"].is_string());
}

#[tokio::test]
async fn an_empty_store_lists_nothing() {
    let store = EmbeddedStore::new();
    assert_eq!(
        get(&store, "/rockets").await,
        (
            200,
            json!({"rockets": [], "nextCursor": null, "totals":
                {"rockets": 0, "pending": 0, "launched": 0, "exploded": 0, "stalled": 0}})
        )
    );
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_them() {
    let store = fleet(3, 1).await;
    let (_, page) = get(&store, "/rockets?sortBy=speed&limit=1").await;
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    for (query, field) in [
        ("sortBy=velocity", "sortBy"),
        ("order=sideways", "order"),
        ("status=orbiting", "status"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("cursor=garbage", "cursor"),
        (&*format!("sortBy=mission&cursor={cursor}"), "cursor"),
    ] {
        let (status, body) = get(&store, &format!("/rockets?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    let (status, body) = get(&store, "/rockets/x/events?after=-1").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("after"))
    );
    let (status, body) = get(&store, "/rockets/x/events?limit=0").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("limit"))
    );
    let (status, body) = get(&store, "/rockets/bad%20channel").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("channel"))
    );
}

#[tokio::test]
async fn one_rocket_and_its_history() {
    let store = EmbeddedStore::new();
    let c = channel("apollo-11");
    let messages = flight(&c, 5, &mut Rng::new(5));
    let mut timeline = Timeline::empty(c.clone(), Utc::now());
    for m in messages.iter().cloned() {
        timeline.receive(m);
    }
    store
        .commit(0, &timeline.into_change().unwrap())
        .await
        .unwrap();

    let (status, rocket) = get(&store, "/rockets/apollo-11").await;
    assert_eq!(status, 200);
    assert_eq!(rocket["lastMessageNumber"], 5);
    assert_eq!(rocket["pendingMessages"], 0);

    let (status, page) = get(&store, "/rockets/apollo-11/events?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["metadata"]["messageNumber"], 1);
    assert_eq!(page["nextAfter"], 2);
    let (_, rest) = get(&store, "/rockets/apollo-11/events?after=2").await;
    let numbers: Vec<_> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["messageNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4, 5]);
    assert_eq!(rest["nextAfter"], Value::Null);
    assert_eq!(
        rest["events"][0],
        serde_json::to_value(&messages[2]).unwrap()
    );
}

#[tokio::test]
async fn unknown_rockets_are_404s() {
    let store = EmbeddedStore::new();
    for path in ["/rockets/nobody", "/rockets/nobody/events"] {
        let (status, body) = get(&store, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn health() {
    assert_eq!(
        get(&EmbeddedStore::new(), "/health").await,
        (200, json!({"status": "ok"}))
    );
}

#[tokio::test]
async fn an_event_lambda_http_cannot_convert_is_a_400_naming_the_field() {
    let store = fleet(3, 1).await;
    let handler = |route, request| query::handle(&store, route, request);
    for path in ["/rockets", "/rockets/x", "/health"] {
        for (event, field) in rockets_testkit::unconvertible_gateway_events("GET", path, "") {
            let response = rockets::http::serve_event(&handler, event).await.response;
            assert_eq!(response.status_code, 400, "{path} {field}");
            let Some(lambda_http::Body::Text(text)) = &response.body else {
                panic!("a JSON body")
            };
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["field"], field, "{path}");
        }
    }
}

/// Text as long as a 64 KiB body allowed before text was bounded at ingest.
fn huge(n: u64) -> std::sync::Arc<str> {
    format!("{n}{}", "m".repeat(60_000)).into()
}

#[tokio::test]
async fn pages_stay_within_the_response_limit_whatever_was_stored() {
    use rockets::message::Event;
    use rockets_testkit::message;
    let store = EmbeddedStore::new();
    for i in 0..100 {
        let c = channel(&format!("huge-{i:03}"));
        let mut timeline = Timeline::empty(c.clone(), Utc::now());
        timeline.receive(message(
            &c,
            1,
            Event::Launched {
                rocket_type: huge(i),
                launch_speed: 1,
                mission: huge(i),
            },
        ));
        if i == 0 {
            for n in 2..=100 {
                timeline.receive(message(
                    &c,
                    n,
                    Event::MissionChanged {
                        new_mission: huge(n),
                    },
                ));
            }
        }
        store
            .commit(0, &timeline.into_change().unwrap())
            .await
            .unwrap();
    }
    let max = query::MAX_BODY_BYTES;

    let mut seen = Vec::new();
    let mut path = "/rockets?limit=100".to_string();
    for _ in 0..100 {
        let (status, body) = get(&store, &path).await;
        assert_eq!(status, 200);
        assert!(
            body.to_string().len() <= max,
            "{} bytes",
            body.to_string().len()
        );
        seen.extend(
            body["rockets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["channel"].clone()),
        );
        match body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/rockets?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 100, "every rocket once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 100);

    let mut numbers = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = get(
            &store,
            &format!("/rockets/huge-000/events?after={after}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.to_string().len() <= max);
        numbers.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["metadata"]["messageNumber"].as_u64().unwrap()),
        );
        match body["nextAfter"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(numbers, (1..=100).collect::<Vec<_>>());
}

/// A store that does not answer.
struct DownStore;

impl rockets::ports::RocketReader for DownStore {
    async fn rocket(
        &self,
        _: &rockets::message::Channel,
    ) -> Result<Option<rockets::rocket::Rocket>, rockets::ports::StoreError> {
        Err(rockets::ports::StoreError::Unavailable("timed out".into()))
    }

    async fn rockets(
        &self,
        _: &rockets::listing::ListQuery,
    ) -> Result<rockets::listing::RocketPage, rockets::ports::StoreError> {
        Err(rockets::ports::StoreError::Unavailable("timed out".into()))
    }

    async fn history(
        &self,
        _: &rockets::message::Channel,
        _: u64,
        _: usize,
    ) -> Result<Option<Vec<rockets::message::Envelope>>, rockets::ports::StoreError> {
        Err(rockets::ports::StoreError::Unavailable("timed out".into()))
    }
}

#[tokio::test]
async fn health_is_shallow_unless_asked_to_read_the_store() {
    let (status, body) = get(&EmbeddedStore::new(), "/health?deep=true").await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "ok", "store": "ok"}))
    );
    let ask = |query: Option<&str>| {
        rockets::http::api_gateway_request(
            Method::GET,
            "/health",
            query,
            HeaderMap::new(),
            Vec::new(),
        )
        .expect("a convertible request")
    };
    assert_eq!(
        rockets::http::respond(
            |route, request| query::handle(&DownStore, route, request),
            ask(None)
        )
        .await
        .status(),
        200
    );
    let deep = rockets::http::respond(
        |route, request| query::handle(&DownStore, route, request),
        ask(Some("deep=true")),
    )
    .await;
    assert_eq!(deep.status(), 503);
    assert_eq!(deep.headers()["retry-after"], "1");
}

#[tokio::test]
async fn a_stalled_rocket_says_what_it_waits_for_and_the_check_counts_it() {
    let store = EmbeddedStore::new();
    let c = channel("stalled-rocket");
    let messages = flight(&c, 6, &mut Rng::new(4));
    let began = Utc::now();
    let mut timeline = Timeline::empty(c.clone(), began);
    for m in [&messages[0], &messages[1], &messages[3], &messages[5]] {
        timeline.receive(m.clone());
    }
    store
        .commit(0, &timeline.into_change().unwrap())
        .await
        .unwrap();
    let (status, rocket) = get(&store, "/rockets/stalled-rocket").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&rocket["waitingFor"], &rocket["pendingMessages"]),
        (&json!(3), &json!(2))
    );
    let since: DateTime<Utc> = rocket["stalledSince"].as_str().unwrap().parse().unwrap();
    assert_eq!(since, began);

    let an_hour_on = began + chrono::Duration::hours(1);
    let found = query::stalls(&store, an_hour_on).await.unwrap();
    assert_eq!(
        (found.stalled_rockets, found.oldest_stall_seconds),
        (1, 3600)
    );
    let metrics = query::stall_metrics(&found).to_json(0);
    assert_eq!(
        (&metrics["StalledRockets"], &metrics["OldestStallAge"]),
        (&json!(1.0), &json!(3600.0))
    );

    // Once the gap fills, the rocket no longer waits, and the check reports zero, so that its
    // alarm clears.
    let stored = store.load(&c, 100, &[]).await.unwrap().unwrap();
    let mut timeline = Timeline::load(stored.rocket, stored.parked, an_hour_on);
    timeline.receive(messages[2].clone());
    timeline.receive(messages[4].clone());
    store
        .commit(stored.version, &timeline.into_change().unwrap())
        .await
        .unwrap();
    let (_, rocket) = get(&store, "/rockets/stalled-rocket").await;
    assert!(rocket.get("waitingFor").is_none() && rocket.get("stalledSince").is_none());
    let found = query::stalls(&store, an_hour_on).await.unwrap();
    assert_eq!(found, query::Stalls::default());
    let metrics = query::stall_metrics(&found).to_json(0);
    assert_eq!(metrics["OldestStallAge"], json!(0.0));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// `GET /rockets/{channel}?asOf=N` is the fold of the first N messages of the history,
    /// for any flight and any N; past the last message, a 404.
    #[test]
    fn the_state_as_of_any_message_is_the_fold_of_the_history_up_to_it(
        seed: u64,
        length in 1u64..80,
        pick in 0.0f64..1.0,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store = EmbeddedStore::new();
            let c = channel("story");
            let messages = flight(&c, length, &mut Rng::new(seed));
            let mut timeline = Timeline::empty(c.clone(), Utc::now());
            for m in &messages {
                timeline.receive(m.clone());
            }
            store.commit(0, &timeline.into_change().unwrap()).await.unwrap();
            let n = 1 + ((length - 1) as f64 * pick) as u64;
            let (status, body) = get(&store, &format!("/rockets/story?asOf={n}")).await;
            proptest::prop_assert_eq!(status, 200);
            let then: rockets::rocket::Rocket = serde_json::from_value(body).unwrap();
            let folded = rockets::rocket::Rocket::fold(c.clone(), &messages[..n as usize], Utc::now());
            proptest::prop_assert!(then.same_state(&folded), "{:?} != {:?}", then, folded);
            let (status, _) = get(&store, &format!("/rockets/story?asOf={}", length + 1)).await;
            proptest::prop_assert_eq!(status, 404);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn as_of_names_the_parameter_when_it_is_not_a_message_number() {
    let store = fleet(3, 5).await;
    for bad in ["0", "-1", "1.5", "x", "99999999999999999999999"] {
        let (status, body) = get(&store, &format!("/rockets/rocket-x?asOf={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "asOf", "{bad}");
    }
    let (status, _) = get(&store, "/rockets/nobody?asOf=1").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn channels_are_found_by_their_beginning_and_the_totals_add_up() {
    let store = fleet(40, 8).await;
    let all = walk(&store, "sortBy=channel", 7).await;
    let found = walk(&store, "channelPrefix=rocket-1", 3).await;
    let wanted: Vec<&Value> = all
        .iter()
        .filter(|r| r["channel"].as_str().unwrap().starts_with("rocket-1"))
        .collect();
    assert!(!wanted.is_empty());
    assert_eq!(found.iter().collect::<Vec<_>>(), wanted);
    let (_, page) = get(&store, "/rockets?limit=1").await;
    let totals = &page["totals"];
    assert_eq!(totals["rockets"], all.len());
    let stalled = all
        .iter()
        .filter(|r| r["pendingMessages"].as_u64() > Some(0))
        .count();
    assert_eq!(totals["stalled"], stalled);
    for bad in [
        "channelPrefix=rocket&sortBy=speed",
        "channelPrefix=rocket&stalled=true",
        "channelPrefix=",
    ] {
        let (status, body) = get(&store, &format!("/rockets?{bad}")).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("channelPrefix")),
            "{bad}: {body}"
        );
    }
}
