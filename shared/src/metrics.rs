//! Metrics in CloudWatch's Embedded Metric Format: one JSON document per invocation (or batch)
//! on stdout, which CloudWatch Logs turns into metrics with no API call and no extra latency.
//!
//! Every document carries the `service` and `function` dimensions; a document may add more
//! (a route and a status, an error code) in further dimension sets. The first document of a
//! process also counts `ColdStart`. The namespace and the service name come from the same
//! variables Powertools reads, `POWERTOOLS_METRICS_NAMESPACE` and `POWERTOOLS_SERVICE_NAME`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

pub const NAMESPACE_ENV: &str = "POWERTOOLS_METRICS_NAMESPACE";
pub const SERVICE_ENV: &str = "POWERTOOLS_SERVICE_NAME";
const DEFAULT_NAMESPACE: &str = "Rockets";
const DEFAULT_SERVICE: &str = "rockets";

/// The units this service reports in (EMF takes CloudWatch's unit names).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// The metrics' names, the one list the template's alarms and dashboard are checked against.
pub mod names {
    pub const COLD_START: &str = "ColdStart";
    // apply
    pub const RECORDS: &str = "Records";
    pub const APPLIED: &str = "Applied";
    pub const PARKED: &str = "Parked";
    pub const DUPLICATES: &str = "Duplicates";
    pub const CONFLICTS: &str = "Conflicts";
    pub const DEAD_LETTERED: &str = "DeadLettered";
    pub const FAILED_RECORDS: &str = "FailedRecords";
    pub const COMMIT_RETRIES: &str = "CommitRetries";
    pub const DRAINED_PARKED: &str = "DrainedParked";
    pub const OLDEST_RECORD_AGE: &str = "OldestRecordAge";
    pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
    pub const STORE_FAILED: &str = "StoreFailed";
    // query's scheduled check
    pub const STALLED_ROCKETS: &str = "StalledRockets";
    pub const OLDEST_STALL_AGE: &str = "OldestStallAge";
    // ingest
    pub const ACCEPTED: &str = "Accepted";
    pub const REJECTED: &str = "Rejected";
    pub const QUEUE_UNAVAILABLE: &str = "QueueUnavailable";
    // the HTTP functions
    pub const REQUESTS: &str = "Requests";
    pub const LATENCY: &str = "Latency";

    pub const ALL: [&str; 20] = [
        COLD_START,
        RECORDS,
        APPLIED,
        PARKED,
        DUPLICATES,
        CONFLICTS,
        DEAD_LETTERED,
        FAILED_RECORDS,
        COMMIT_RETRIES,
        DRAINED_PARKED,
        OLDEST_RECORD_AGE,
        STORE_UNAVAILABLE,
        STORE_FAILED,
        STALLED_ROCKETS,
        OLDEST_STALL_AGE,
        ACCEPTED,
        REJECTED,
        QUEUE_UNAVAILABLE,
        REQUESTS,
        LATENCY,
    ];
}

struct Settings {
    namespace: String,
    service: String,
}

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let read = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Settings {
            namespace: read(NAMESPACE_ENV, DEFAULT_NAMESPACE),
            service: read(SERVICE_ENV, DEFAULT_SERVICE),
        }
    })
}

static COLD: AtomicBool = AtomicBool::new(true);

/// One EMF document being filled in.
#[derive(Clone, Debug)]
pub struct Metrics {
    namespace: String,
    dimensions: Vec<(&'static str, String)>,
    sets: Vec<Vec<&'static str>>,
    values: Vec<(&'static str, Unit, f64)>,
}

impl Metrics {
    /// A document for `function`, in the configured namespace, counting a cold start if this
    /// is the process's first.
    pub fn new(function: &'static str) -> Self {
        let settings = settings();
        let mut metrics = Metrics::in_namespace(&settings.namespace, &settings.service, function);
        metrics.count_cold_start(&COLD);
        metrics
    }

    /// Counts a cold start if `cold` is still set, and clears it.
    fn count_cold_start(&mut self, cold: &AtomicBool) {
        if cold.swap(false, Ordering::Relaxed) {
            self.count(names::COLD_START, 1);
        }
    }

    /// A document with the given namespace and service, without the cold-start count.
    pub fn in_namespace(namespace: &str, service: &str, function: &'static str) -> Self {
        Metrics {
            namespace: namespace.to_string(),
            dimensions: vec![
                ("service", service.to_string()),
                ("function", function.to_string()),
            ],
            sets: vec![vec!["service", "function"]],
            values: Vec::new(),
        }
    }

    /// Adds a dimension and a dimension set of the base dimensions and it, so the document's
    /// metrics are also reported per its value.
    pub fn per(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.dimensions.push((key, value.into()));
        let mut set = vec!["service", "function"];
        set.push(key);
        self.sets.push(set);
        self
    }

    /// Adds a dimension and one set of the base dimensions and every dimension added so far.
    pub fn per_all(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.dimensions.push((key, value.into()));
        self.sets
            .push(self.dimensions.iter().map(|(k, _)| *k).collect());
        self
    }

    pub fn count(&mut self, name: &'static str, value: usize) -> &mut Self {
        self.values.push((name, Unit::Count, value as f64));
        self
    }

    pub fn millis(&mut self, name: &'static str, value: f64) -> &mut Self {
        self.values.push((name, Unit::Milliseconds, value.max(0.0)));
        self
    }

    pub fn seconds(&mut self, name: &'static str, value: f64) -> &mut Self {
        self.values.push((name, Unit::Seconds, value.max(0.0)));
        self
    }

    /// The document, stamped `timestamp_ms` (milliseconds since the epoch).
    pub fn to_json(&self, timestamp_ms: i64) -> Value {
        let mut root = Map::new();
        for (key, value) in &self.dimensions {
            root.insert((*key).to_string(), json!(value));
        }
        for (name, _, value) in &self.values {
            root.insert((*name).to_string(), json!(value));
        }
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": self.sets,
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(root)
    }

    /// Writes the document to stdout as one line, where CloudWatch Logs finds it.
    pub fn emit(&self) {
        if self.values.is_empty() {
            return;
        }
        let line = self.to_json(chrono::Utc::now().timestamp_millis());
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EMF specification's rules for one document: the `_aws` metadata with a timestamp
    /// and at least one directive; each directive a namespace, dimension sets of at most 30
    /// keys naming root members that are strings, and at most 100 metric definitions naming
    /// root members that are numbers, with units CloudWatch knows.
    fn check_emf(document: &Value) -> Result<(), String> {
        let root = document.as_object().ok_or("not an object")?;
        let aws = root
            .get("_aws")
            .and_then(Value::as_object)
            .ok_or("no _aws")?;
        let timestamp = aws.get("Timestamp").ok_or("no Timestamp")?;
        if !timestamp.is_i64() || timestamp.as_i64() < Some(0) {
            return Err("Timestamp is not milliseconds since the epoch".into());
        }
        let directives = aws
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .filter(|d| !d.is_empty())
            .ok_or("no CloudWatchMetrics")?;
        for directive in directives {
            let namespace = directive["Namespace"].as_str().ok_or("no Namespace")?;
            if namespace.is_empty() || namespace.len() > 1024 {
                return Err("Namespace is empty or too long".into());
            }
            for set in directive["Dimensions"]
                .as_array()
                .ok_or("Dimensions is not an array")?
            {
                let keys = set.as_array().ok_or("a dimension set is not an array")?;
                if keys.len() > 30 {
                    return Err("a dimension set has more than 30 keys".into());
                }
                for key in keys {
                    let key = key.as_str().ok_or("a dimension key is not a string")?;
                    if !root.get(key).is_some_and(Value::is_string) {
                        return Err(format!("dimension {key} has no string value"));
                    }
                }
            }
            let metrics = directive["Metrics"]
                .as_array()
                .ok_or("Metrics is not an array")?;
            if metrics.len() > 100 {
                return Err("more than 100 metrics".into());
            }
            for metric in metrics {
                let name = metric["Name"].as_str().ok_or("a metric has no Name")?;
                if name.is_empty() || name.len() > 1024 {
                    return Err("a metric name is empty or too long".into());
                }
                if !root.get(name).is_some_and(Value::is_number) {
                    return Err(format!("metric {name} has no number"));
                }
                if let Some(unit) = metric.get("Unit") {
                    let known = ["Count", "Milliseconds", "Seconds", "Bytes", "None"];
                    if !unit.as_str().is_some_and(|u| known.contains(&u)) {
                        return Err(format!("metric {name} has unit {unit}"));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let mut metrics = Metrics::in_namespace("Rockets", "rockets", "query");
        metrics
            .per_all("route", "GET /rockets")
            .per_all("status", "200")
            .count(names::REQUESTS, 1)
            .millis(names::LATENCY, 3.5);
        let document: Value =
            serde_json::from_str(&metrics.to_json(1_700_000_000_000).to_string()).unwrap();
        check_emf(&document).unwrap();
        assert_eq!(document["route"], "GET /rockets");
        assert_eq!(document["Requests"], 1.0);
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([
                ["service", "function"],
                ["service", "function", "route"],
                ["service", "function", "route", "status"]
            ])
        );

        let mut rejected = Metrics::in_namespace("Rockets", "rockets", "ingest");
        rejected
            .per("code", "invalid_value")
            .count(names::REJECTED, 1);
        let document = rejected.to_json(1);
        check_emf(&document).unwrap();
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1],
            json!(["service", "function", "code"])
        );
    }

    #[test]
    fn the_checker_catches_what_the_specification_forbids() {
        let good = Metrics::in_namespace("N", "s", "f")
            .count(names::APPLIED, 2)
            .to_json(5);
        check_emf(&good).unwrap();
        let mut no_value = good.clone();
        no_value.as_object_mut().unwrap().remove("Applied");
        assert!(check_emf(&no_value).is_err());
        let mut no_dimension = good.clone();
        no_dimension.as_object_mut().unwrap().remove("service");
        assert!(check_emf(&no_dimension).is_err());
        let mut no_timestamp = good;
        no_timestamp["_aws"]
            .as_object_mut()
            .unwrap()
            .remove("Timestamp");
        assert!(check_emf(&no_timestamp).is_err());
    }

    #[test]
    fn only_the_first_document_of_a_process_counts_a_cold_start() {
        let cold = AtomicBool::new(true);
        let mut first = Metrics::in_namespace("N", "s", "apply");
        first.count_cold_start(&cold);
        let mut second = Metrics::in_namespace("N", "s", "apply");
        second.count_cold_start(&cold);
        let first = first.to_json(1);
        assert_eq!(first["ColdStart"], 1.0);
        check_emf(&first).unwrap();
        assert!(second.values.is_empty());
        Metrics::new("apply");
        assert!(Metrics::new("apply").to_json(1).get("ColdStart").is_none());
    }
}
