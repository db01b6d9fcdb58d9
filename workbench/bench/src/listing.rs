//! `GET /rockets` sorted by speed at scale, in the embedded store: the first page and a page
//! from the middle of the order, through a cursor, as the number of rockets grows.

use crate::mark;
use std::fmt::Write as _;
use std::time::Instant;

use chrono::Utc;
use rockets::listing::{ListQuery, Order, SortKey};
use rockets::message::Event;
use rockets::ordering::Timeline;
use rockets::ports::{ChannelStore, RocketReader};
use rockets_embedded::EmbeddedStore;
use rockets_testkit::{Rng, channel, message};

use crate::stats::{Summary, micros};

pub struct Scale {
    pub rockets: usize,
    pub fill_seconds: f64,
    pub first_page_us: Summary,
    pub deep_page_us: Summary,
}

/// Fills a store with `rockets` launched rockets of random speeds, then times pages of 100.
pub fn run(rockets: usize, samples: usize) -> Scale {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = EmbeddedStore::new();
    let mut rng = Rng::new(rockets as u64);
    let filled = Instant::now();
    for i in 0..rockets {
        let c = channel(&format!("rocket-{i:07}"));
        let launch = Event::Launched {
            rocket_type: "Falcon-9".into(),
            launch_speed: rng.below(1_000_000) as i64,
            mission: "ARTEMIS".into(),
        };
        let mut timeline = Timeline::empty(c.clone(), Utc::now());
        timeline.receive(message(&c, 1, launch));
        let change = timeline.into_change().expect("a launch changes the rocket");
        runtime.block_on(store.commit(0, &change)).expect("commit");
    }
    let fill_seconds = filled.elapsed().as_secs_f64();

    let first = ListQuery {
        sort_by: SortKey::Speed,
        order: Order::Desc,
        limit: 100,
        ..ListQuery::default()
    };
    // The cursor of a page halfway down: walk there once, in pages of 1000.
    let mut deep = ListQuery {
        limit: 1000,
        ..first.clone()
    };
    for _ in 0..(rockets / 2) / 1000 {
        deep.after = runtime.block_on(store.rockets(&deep)).expect("page").next;
    }
    deep.limit = 100;

    let time = |query: &ListQuery| {
        let samples: Vec<f64> = (0..samples)
            .map(|_| {
                let begun = Instant::now();
                let page = runtime.block_on(store.rockets(query)).expect("page");
                let took = micros(begun.elapsed());
                assert_eq!(page.rockets.len(), 100);
                took
            })
            .collect();
        Summary::of(samples)
    };
    Scale {
        rockets,
        fill_seconds,
        first_page_us: time(&first),
        deep_page_us: time(&deep),
    }
}

pub fn report(quick: bool) -> String {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let mut out = String::from(
        "| rockets | fill (s) | first page of 100 (µs) | page at the middle, by cursor (µs) |\n|---|---|---|---|\n",
    );
    let mut largest_first = 0.0;
    for &size in sizes {
        let scale = run(size, if quick { 50 } else { 200 });
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} |",
            scale.rockets,
            scale.fill_seconds,
            scale.first_page_us.show(0),
            scale.deep_page_us.show(0)
        );
        largest_first = scale.first_page_us.median;
    }
    let _ = writeln!(
        out,
        "\n`GET /rockets?sortBy=speed&order=desc&limit=100` straight on the store, without HTTP. \
         Target: first page under 5 ms at the largest size: {}.",
        mark(largest_first < 5_000.0)
    );
    out
}
