//! What a million messages cost on AWS: the real handlers driven against the emulators, every
//! billable request counted, and DynamoDB's own ConsumedCapacity summed, then priced.
//!
//! Ingest sends to SQS on moto. Moto hands out at most one message per FIFO group per receive,
//! where SQS fills a batch from one group first, so apply's batches come from an embedded FIFO
//! queue that was sent the same messages and batches as SQS does: a backlog of one channel
//! arrives ten messages at a time, and DynamoDB's cost per message is what it would be.

use crate::mark;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_http::http::Method;
use rockets::http::api_gateway_request;
use rockets::message::Envelope;
use rockets::ports::{MessageQueue, QueueConsumer, QueueError};
use rockets_aws::emulator_config;
use rockets_aws::provision::{QueueSettings, ensure_queues, ensure_table};
use rockets_aws::{DynamoStore, SqsQueue};
use rockets_embedded::EmbeddedQueue;
use rockets_testkit::{Rng, flight, unique_name};
use rockets_tools::capacity::{CapacityMeter, WriteUnits};

/// us-east-1 on-demand prices, as published on the date in the report.
pub const PRICES_DATE: &str = "2026-11-22";
const HTTP_API_PER_MILLION: f64 = 1.00;
const LAMBDA_PER_MILLION: f64 = 0.20;
const LAMBDA_ARM_PER_GB_SECOND: f64 = 0.000_013_333_4;
const SQS_FIFO_PER_MILLION: f64 = 0.50;
const DYNAMODB_WRITE_PER_MILLION: f64 = 0.625;
const DYNAMODB_READ_PER_MILLION: f64 = 0.125;
const MEMORY_GB: f64 = 128.0 / 1024.0;

#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    pub name: &'static str,
    pub shuffled: bool,
    /// Records per apply invocation: 1 for a trickle, 10 when the queue is full.
    pub batch: usize,
}

#[derive(Default, Debug)]
pub struct Bill {
    pub messages: u64,
    pub http_requests: u64,
    pub ingest_invocations: u64,
    pub apply_invocations: u64,
    pub sqs_sends: u64,
    pub sqs_receives: u64,
    pub sqs_deletes: u64,
    pub read_units: f64,
    pub write_units: WriteUnits,
    /// Strongly consistent DynamoDB reads, and the channels apply's batches held in all.
    pub consistent_reads: u64,
    pub batch_channels: u64,
    pub ingest_ms: Vec<f64>,
    pub apply_ms: Vec<f64>,
}

impl Bill {
    fn per_message(&self, count: f64) -> f64 {
        count / self.messages as f64
    }

    /// Lambda bills each invocation's duration rounded up to the millisecond.
    fn gb_seconds(durations: &[f64]) -> f64 {
        durations
            .iter()
            .map(|ms| ms.ceil() / 1000.0 * MEMORY_GB)
            .sum()
    }

    /// Dollars per million messages, by service.
    pub fn dollars_per_million(&self) -> [(&'static str, f64); 4] {
        let scale = 1e6 / self.messages as f64;
        let api = self.http_requests as f64 * HTTP_API_PER_MILLION / 1e6;
        let invocations = (self.ingest_invocations + self.apply_invocations) as f64;
        let lambda = invocations * LAMBDA_PER_MILLION / 1e6
            + (Self::gb_seconds(&self.ingest_ms) + Self::gb_seconds(&self.apply_ms))
                * LAMBDA_ARM_PER_GB_SECOND;
        let sqs = (self.sqs_sends + self.sqs_receives + self.sqs_deletes) as f64
            * SQS_FIFO_PER_MILLION
            / 1e6;
        let dynamodb = self.write_units.total() * DYNAMODB_WRITE_PER_MILLION / 1e6
            + self.read_units * DYNAMODB_READ_PER_MILLION / 1e6;
        [
            ("API Gateway", api * scale),
            ("Lambda", lambda * scale),
            ("SQS", sqs * scale),
            ("DynamoDB", dynamodb * scale),
        ]
    }

    /// Dollars per million messages, all services.
    pub fn total_per_million(&self) -> f64 {
        self.dollars_per_million().iter().map(|(_, d)| d).sum()
    }

    /// Write units of the state item per message.
    pub fn state_writes_per_message(&self) -> f64 {
        self.per_message(self.write_units.state)
    }

    /// Strongly consistent reads per channel per batch.
    pub fn consistent_reads_per_channel_batch(&self) -> f64 {
        self.consistent_reads as f64 / self.batch_channels.max(1) as f64
    }

    /// Write units per message, by what was written.
    pub fn writes_row(&self, traffic: &Traffic) -> String {
        let w = &self.write_units;
        format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            traffic.name,
            self.per_message(w.state),
            self.per_message(w.history),
            self.per_message(w.parked),
            self.per_message(w.indexes),
            self.per_message(w.total()),
            self.consistent_reads_per_channel_batch(),
        )
    }

    pub fn row(&self, traffic: &Traffic) -> String {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            crate::stats::quantile(&mut v, 0.5)
        };
        let dollars = self.dollars_per_million();
        let total = self.total_per_million();
        format!(
            "| {} | {:.2} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} | {} | ${:.2} |",
            traffic.name,
            self.per_message(self.apply_invocations as f64),
            self.per_message(self.sqs_sends as f64),
            self.per_message(self.sqs_receives as f64),
            self.per_message(self.sqs_deletes as f64),
            self.per_message(self.read_units),
            self.per_message(self.write_units.total()),
            self.per_message(self.http_requests as f64),
            self.per_message(self.ingest_invocations as f64),
            median(&self.ingest_ms),
            median(&self.apply_ms),
            dollars
                .iter()
                .map(|(service, d)| format!("{service} ${d:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            total
        )
    }
}

/// Sends `rockets` flights of `length` messages through ingest and apply on the emulators.
pub fn run(moto: &str, dynamodb: &str, traffic: Traffic, rockets: usize, length: u64) -> Bill {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sqs_config = emulator_config(moto).await;
        let sqs = aws_sdk_sqs::Client::new(&sqs_config);
        let settings = QueueSettings {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
        };
        let queues = ensure_queues(&sqs, &unique_name("cost"), settings)
            .await
            .expect("queues");
        let sqs = SqsQueue::new(sqs, queues.url);
        let batcher = EmbeddedQueue::new(Default::default());
        let queue = Sent {
            sqs: &sqs,
            batcher: &batcher,
        };
        let table_config = emulator_config(dynamodb).await;
        let meter = CapacityMeter::new();
        let dynamodb = meter.client(&table_config);
        let table = unique_name("cost");
        ensure_table(&dynamodb, &table).await.expect("table");
        let store = DynamoStore::new(dynamodb, table);
        let settings = apply::Settings::default();

        let mut rng = Rng::new(rockets as u64 + length);
        let flights: Vec<Vec<Envelope>> = (0..rockets)
            .map(|_| {
                let channel = rng.uuid_channel();
                flight(&channel, length, &mut rng)
            })
            .collect();
        let mut arrivals: Vec<&Envelope> = if traffic.shuffled {
            let mut all: Vec<&Envelope> = flights.iter().flatten().collect();
            let originals = all.len();
            for i in 0..originals {
                if rng.chance(10) {
                    all.push(all[i]);
                }
            }
            rng.shuffle(&mut all);
            all
        } else {
            // In order per rocket, rockets interleaved.
            (0..length as usize)
                .flat_map(|n| flights.iter().map(move |f| &f[n]))
                .collect()
        };
        let mut bill = Bill {
            messages: flights.iter().map(|f| f.len() as u64).sum(),
            ..Bill::default()
        };

        // Messages on the queue and not yet applied. A resend within the deduplication window
        // is accepted by SQS and dropped, so only first sends count.
        let mut backlog = 0usize;
        let mut sent = HashSet::new();
        while !arrivals.is_empty() || backlog > 0 {
            // A trickle: each message is applied before the next arrives. Full batches: the
            // queue fills first and apply drains it ten at a time.
            let take = if traffic.batch == 1 {
                1
            } else {
                arrivals.len()
            };
            for message in arrivals.drain(..take.min(arrivals.len())) {
                let request = api_gateway_request(
                    Method::POST,
                    "/messages",
                    None,
                    Default::default(),
                    message.to_json().into_bytes(),
                )
                .expect("a convertible request");
                let begun = Instant::now();
                let response = rockets::http::respond(
                    |route, request| {
                        ingest::handle(&queue, &rockets::ports::OpenChannels, route, request)
                    },
                    request,
                )
                .await;
                bill.ingest_ms.push(begun.elapsed().as_secs_f64() * 1e3);
                assert_eq!(response.status(), 202);
                bill.http_requests += 1;
                bill.ingest_invocations += 1;
                bill.sqs_sends += 1;
                if sent.insert((message.channel.clone(), message.number)) {
                    backlog += 1;
                }
            }
            let records = QueueConsumer::receive(&batcher, traffic.batch, Duration::ZERO)
                .await
                .expect("receive");
            bill.sqs_receives += 1;
            if records.is_empty() {
                continue;
            }
            backlog = backlog.saturating_sub(records.len());
            let channels: HashSet<_> = records.iter().map(|r| r.group_id.clone()).collect();
            bill.batch_channels += channels.len() as u64;
            let handles: Vec<String> = records.iter().map(|r| r.receipt_handle.clone()).collect();
            // What Lambda would hand the function deployed: records shaped as SQS sends them.
            let mut event = SqsEvent::default();
            event.records = records.into_iter().map(|r| r.into_record()).collect();
            let begun = Instant::now();
            let response = apply::handle(&store, &batcher, &batcher, &settings, event)
                .await
                .expect("apply");
            bill.apply_ms.push(begun.elapsed().as_secs_f64() * 1e3);
            bill.apply_invocations += 1;
            assert!(response.batch_item_failures.is_empty(), "{response:?}");
            let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
            QueueConsumer::delete(&batcher, &handles)
                .await
                .expect("delete");
            bill.sqs_deletes += 1;
        }
        bill.read_units = meter.capacity().read_units();
        bill.write_units = meter.capacity().write_units();
        bill.consistent_reads = meter.capacity().consistent_reads();
        bill
    })
}

/// Ingest's queue: SQS itself, and the embedded queue that batches for apply.
struct Sent<'a> {
    sqs: &'a SqsQueue,
    batcher: &'a EmbeddedQueue,
}

impl MessageQueue for Sent<'_> {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        self.sqs.send(message).await?;
        self.batcher.send(message).await
    }
}

pub fn report(quick: bool) -> String {
    let (Ok(moto), Ok(dynamodb)) = (
        std::env::var("ROCKETS_TEST_MOTO"),
        std::env::var("ROCKETS_TEST_DYNAMODB_LOCAL"),
    ) else {
        return "Not measured: the emulators are not running (scripts/bench starts them).\n".into();
    };
    let (rockets, length) = if quick { (5, 10) } else { (10, 20) };
    let traffic = [
        Traffic {
            name: "in order, one message per batch",
            shuffled: false,
            batch: 1,
        },
        Traffic {
            name: "in order, full batches",
            shuffled: false,
            batch: 10,
        },
        Traffic {
            name: "shuffled + 10% resent, one per batch",
            shuffled: true,
            batch: 1,
        },
        Traffic {
            name: "shuffled + 10% resent, full batches",
            shuffled: true,
            batch: 10,
        },
    ];
    let mut out = String::from(
        "| traffic | apply invocations | SQS send / receive / delete | DynamoDB RCU | DynamoDB WCU | API requests | ingest invocations | handler ms ingest / apply | $ per million messages, by service | total |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut writes = String::from(
        "| traffic | state | history | parked | indexes | total | strongly consistent reads per channel per batch |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut state_per_in_order_message: f64 = 0.0;
    let mut reads_per_channel_batch: f64 = 0.0;
    for t in &traffic {
        let bill = run(&moto, &dynamodb, *t, rockets, length);
        let _ = writeln!(out, "{}", bill.row(t));
        let _ = writeln!(writes, "{}", bill.writes_row(t));
        if !t.shuffled {
            state_per_in_order_message =
                state_per_in_order_message.max(bill.state_writes_per_message());
        }
        reads_per_channel_batch =
            reads_per_channel_batch.max(bill.consistent_reads_per_channel_batch());
    }
    let _ = writeln!(
        out,
        "\nDynamoDB write units per message, by what was written, and strongly consistent reads:\n\n\
         {writes}\n\
         Targets: at most one write unit of state change per in-order message ({}: {state_per_in_order_message:.2} at most), \
         no more than one strongly consistent read per channel per batch ({}: {reads_per_channel_batch:.2} at most).",
        mark(state_per_in_order_message <= 1.0),
        mark(reads_per_channel_batch <= 1.0),
    );
    let _ = writeln!(
        out,
        "\nCounts are per message ({rockets} rockets × {length} messages per row, each channel a random \
         UUID as the challenge names them). The real ingest \
         and apply handlers run against SQS on moto and DynamoDB on DynamoDB Local; every API \
         request, invocation and SQS call is counted, and DynamoDB's own `ConsumedCapacity` \
         (asked for on every call, split by item and index) is summed. Moto hands out one message \
         per FIFO group per receive, where SQS fills a batch from one group first, so apply's \
         batches are formed from the same messages by the embedded FIFO queue, which batches as \
         SQS does; \"one message per batch\" applies each message before the next is sent, \
         \"full batches\" sends them all first. A batch costs one receive and one batch delete, as \
         Lambda's event source mapping makes them; its empty long polls while the queue is idle \
         cost by the hour, not by the message, and are left out. Priced with us-east-1 on-demand rates as of {}: HTTP \
         API $1.00/M requests, Lambda $0.20/M requests and $0.0000133334 per GB-s on arm64 \
         (128 MB, each invocation rounded up to 1 ms), SQS FIFO $0.50/M requests, DynamoDB \
         $0.625/M write units and $0.125/M read units. Handler times are measured against the \
         emulators on this machine; in AWS they are dominated by DynamoDB's latency instead.",
        PRICES_DATE
    );
    out
}

/// Environment variables for a function process.
pub(crate) type Environment<'a> = &'a [(&'a str, &'a str)];
