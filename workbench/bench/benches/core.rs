//! Validating and folding a batch, per message, under criterion.

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockets::message::Envelope;
use rockets::ordering::Timeline;
use rockets_testkit::{Rng, channel, flight};

fn validate_and_fold(c: &mut Criterion) {
    let messages = flight(&channel("core"), 10, &mut Rng::new(1));
    let bodies: Vec<String> = messages.iter().map(Envelope::to_json).collect();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(bodies.len() as u64));
    group.bench_function("validate and fold a batch of 10", |b| {
        b.iter(|| {
            let mut timeline = Timeline::empty(messages[0].channel.clone(), Utc::now());
            for body in &bodies {
                timeline.receive(Envelope::parse(body.as_bytes()).expect("valid"));
            }
            timeline.into_change()
        })
    });
    group.finish();
}

criterion_group!(benches, validate_and_fold);
criterion_main!(benches);
