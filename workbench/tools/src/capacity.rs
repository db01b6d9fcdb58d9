//! What DynamoDB requests consume, as DynamoDB reports it.
//!
//! [`CapacityMeter`] is an SDK interceptor: on a client, it asks each table request for its
//! `ConsumedCapacity` and adds up what comes back, writes split by what they were for (a
//! rocket's state item, a history item, a parked item, and the listing index). The benchmarks
//! and tests meter their clients; the store itself neither asks nor counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::delete_item::{DeleteItemInput, DeleteItemOutput};
use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use std::collections::HashMap;

use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// The table's sort key, how it names a rocket's state item, and the attribute a message item
/// written as parked carries (the store's layout; a test on DynamoDB Local holds the two to
/// agree).
const SK: &str = "sk";
const STATE: &str = "state";
const PARKED_AT: &str = "parkedAt";

/// What the table's items cost to write, as DynamoDB reports it per item kind and for the
/// listing index.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteUnits {
    pub state: f64,
    pub history: f64,
    pub parked: f64,
    pub indexes: f64,
}

impl WriteUnits {
    pub fn total(&self) -> f64 {
        self.state + self.history + self.parked + self.indexes
    }
}

/// What a write was for; the discriminant is its counter in [`Capacity`].
#[derive(Clone, Copy, Debug)]
enum Written {
    State = 0,
    History = 1,
    Parked = 2,
}

/// The counter in [`Capacity`] for the listing index, after those of [`Written`].
const INDEXES: usize = 3;

/// Read and write units consumed, as DynamoDB reported them (in thousandths), and how many
/// strongly consistent reads were made.
#[derive(Default, Debug)]
pub struct Capacity {
    read_milli: AtomicU64,
    consistent_reads: AtomicU64,
    /// State, history, parked, indexes.
    write_milli: [AtomicU64; 4],
}

impl Capacity {
    pub fn read_units(&self) -> f64 {
        self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Strongly consistent requests (queries, gets), however many units each took.
    pub fn consistent_reads(&self) -> u64 {
        self.consistent_reads.load(Ordering::Relaxed)
    }

    pub fn write_units(&self) -> WriteUnits {
        let units = |i: usize| self.write_milli[i].load(Ordering::Relaxed) as f64 / 1000.0;
        WriteUnits {
            state: units(Written::State as usize),
            history: units(Written::History as usize),
            parked: units(Written::Parked as usize),
            indexes: units(INDEXES),
        }
    }

    fn add_read(&self, consumed: Option<&ConsumedCapacity>, consistent: bool) {
        if consistent {
            self.consistent_reads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(units) = consumed.and_then(ConsumedCapacity::capacity_units) {
            self.read_milli.fetch_add(milli(units), Ordering::Relaxed);
        }
    }

    /// Splits a write's units (requested as INDEXES) between the item and the indexes.
    fn add_write(&self, consumed: Option<&ConsumedCapacity>, written: Written) {
        let Some(total) = consumed.and_then(ConsumedCapacity::capacity_units) else {
            return;
        };
        let table = consumed
            .and_then(ConsumedCapacity::table)
            .and_then(|t| t.capacity_units())
            .unwrap_or(total);
        self.write_milli[written as usize].fetch_add(milli(table), Ordering::Relaxed);
        self.write_milli[INDEXES].fetch_add(milli((total - table).max(0.0)), Ordering::Relaxed);
    }
}

fn milli(units: f64) -> u64 {
    (units * 1000.0).round() as u64
}

/// What one request was, remembered from its input until its output is read.
#[derive(Clone, Copy, Debug)]
enum Metered {
    Write(Written),
    Read { consistent: bool },
}

impl Storable for Metered {
    type Storer = StoreReplace<Self>;
}

/// Counts what a DynamoDB client's requests consume. See the module.
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(Arc<Capacity>);

impl CapacityMeter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn capacity(&self) -> &Capacity {
        &self.0
    }

    /// A DynamoDB client for `config` whose requests this meter counts.
    pub fn client(&self, config: &aws_config::SdkConfig) -> Client {
        Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .interceptor(self.clone())
                .build(),
        )
    }
}

/// What a write writes, by the item (or, for a delete, the key) it names: the state, a
/// message parked on arrival, or any other message.
fn written(item: Option<&HashMap<String, AttributeValue>>) -> Written {
    let item = item.into_iter().flatten();
    let mut written = Written::History;
    for (name, value) in item {
        if name == SK && value.as_s().is_ok_and(|sk| sk == STATE) {
            return Written::State;
        }
        if name == PARKED_AT {
            written = Written::Parked;
        }
    }
    written
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        let (indexes, total) = (
            Some(ReturnConsumedCapacity::Indexes),
            Some(ReturnConsumedCapacity::Total),
        );
        let metered = if let Some(put) = input.downcast_mut::<PutItemInput>() {
            put.return_consumed_capacity = indexes;
            Metered::Write(written(put.item.as_ref()))
        } else if let Some(delete) = input.downcast_mut::<DeleteItemInput>() {
            delete.return_consumed_capacity = indexes;
            Metered::Write(written(delete.key.as_ref()))
        } else if let Some(query) = input.downcast_mut::<QueryInput>() {
            query.return_consumed_capacity = total;
            Metered::Read {
                consistent: query.consistent_read == Some(true),
            }
        } else if let Some(get) = input.downcast_mut::<GetItemInput>() {
            get.return_consumed_capacity = total;
            Metered::Read {
                consistent: get.consistent_read == Some(true),
            }
        } else if let Some(batch) = input.downcast_mut::<BatchGetItemInput>() {
            batch.return_consumed_capacity = total;
            Metered::Read {
                consistent: (batch.request_items.iter().flatten())
                    .any(|(_, keys)| keys.consistent_read == Some(true)),
            }
        } else {
            return Ok(());
        };
        cfg.interceptor_state().store_put(metered);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (Some(metered), Ok(output)) = (cfg.load::<Metered>(), context.output_or_error()) else {
            return Ok(());
        };
        match *metered {
            Metered::Write(written) => {
                let consumed = (output.downcast_ref::<PutItemOutput>())
                    .map(|o| o.consumed_capacity.as_ref())
                    .or_else(|| {
                        (output.downcast_ref::<DeleteItemOutput>())
                            .map(|o| o.consumed_capacity.as_ref())
                    })
                    .flatten();
                self.0.add_write(consumed, written);
            }
            Metered::Read { consistent } => {
                if let Some(query) = output.downcast_ref::<QueryOutput>() {
                    self.0
                        .add_read(query.consumed_capacity.as_ref(), consistent);
                } else if let Some(get) = output.downcast_ref::<GetItemOutput>() {
                    self.0.add_read(get.consumed_capacity.as_ref(), consistent);
                } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
                    for consumed in batch.consumed_capacity.iter().flatten() {
                        self.0.add_read(Some(consumed), consistent);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_units_are_split_between_the_item_and_the_indexes() {
        use aws_sdk_dynamodb::types::Capacity as Units;
        let capacity = Capacity::default();
        let state = ConsumedCapacity::builder()
            .capacity_units(5.0)
            .table(Units::builder().capacity_units(1.0).build())
            .build();
        capacity.add_write(Some(&state), Written::State);
        // Without a breakdown (an emulator that reports only the total), it is all the item's.
        let history = ConsumedCapacity::builder().capacity_units(1.0).build();
        capacity.add_write(Some(&history), Written::History);
        capacity.add_write(None, Written::Parked);
        assert_eq!(
            capacity.write_units(),
            WriteUnits {
                state: 1.0,
                history: 1.0,
                parked: 0.0,
                indexes: 4.0
            }
        );
        assert_eq!(capacity.write_units().total(), 6.0);
        let read = ConsumedCapacity::builder().capacity_units(0.5).build();
        capacity.add_read(Some(&read), true);
        capacity.add_read(Some(&read), false);
        assert_eq!(capacity.read_units(), 1.0);
        assert_eq!(capacity.consistent_reads(), 1);
    }

    #[test]
    fn writes_are_told_apart_by_their_item() {
        let item = |pairs: &[(&str, &str)]| -> HashMap<String, AttributeValue> {
            (pairs.iter())
                .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
                .collect()
        };
        let state = item(&[(SK, STATE), ("pk", "a")]);
        assert!(matches!(written(Some(&state)), Written::State));
        let parked = item(&[(SK, "event#00000000000000000042"), (PARKED_AT, "1")]);
        assert!(matches!(written(Some(&parked)), Written::Parked));
        let history = item(&[(SK, "event#00000000000000000042")]);
        assert!(matches!(written(Some(&history)), Written::History));
    }
}
