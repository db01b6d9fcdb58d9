//! The core: validating and folding, per message.

use std::time::Instant;

use chrono::Utc;
use rockets::message::Envelope;
use rockets::ordering::Timeline;
use rockets_testkit::{Rng, channel, flight};

use crate::mark;
use crate::stats::Summary;

/// Parsing and folding, per message, over batches of ten as the apply handler sees them.
pub fn report(quick: bool) -> String {
    let mut rng = Rng::new(1);
    let messages: Vec<Envelope> = (0..100)
        .flat_map(|i| flight(&channel(&format!("core-{i}")), 100, &mut rng))
        .collect();
    let bodies: Vec<String> = messages.iter().map(Envelope::to_json).collect();
    let rounds = if quick { 5 } else { 15 };
    let per_message: Vec<f64> = (0..rounds)
        .map(|_| {
            let begun = Instant::now();
            for (batch, channel_messages) in bodies.chunks(10).zip(messages.chunks(10)) {
                let mut timeline = Timeline::empty(channel_messages[0].channel.clone(), Utc::now());
                for body in batch {
                    let message = Envelope::parse(body.as_bytes()).expect("valid");
                    timeline.receive(message);
                }
                std::hint::black_box(timeline.into_change());
            }
            begun.elapsed().as_secs_f64() * 1e9 / bodies.len() as f64
        })
        .collect();
    let summary = Summary::of(per_message);
    format!(
        "| figure | value | target |\n|---|---|---|\n\
         | validate + fold, per message (ns) | {} | < 1000: {} |\n\n\
         Each message is parsed from its JSON body into a validated envelope and received by a \
         channel timeline, in batches of ten per channel; `cargo bench -p rockets-bench` runs the \
         same work under criterion.\n",
        summary.show(0),
        mark(summary.median < 1000.0)
    )
}
