//! `template.yaml` cannot drift from the code: every route the functions serve is routed,
//! every environment variable they read is set, every AWS action they call is granted to
//! their role and nothing more, and the settings cfn-lint does not check are right.
//!
//! The actions are recorded, not listed by hand: each function's handler runs against moto
//! through SDK clients that note every operation they send.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::config::Intercept;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use lambda_http::http::{HeaderMap, Method};
use rockets::http::{Function, ROUTES, api_gateway_request};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::ChannelChange;
use rockets::ports::{
    ChannelSnapshot, ChannelStore, CommitOutcome, MessageQueue, QueueConsumer, StoreError,
};
use rockets_aws::emulator_config;
use rockets_aws::provision::{QueueSettings, ensure_queues, ensure_table};
use rockets_aws::{DynamoStore, SqsQueue};
use rockets_testkit::{Rng, channel, emulator, flight, sqs_record, unique_name};
use serde_norway::Value;

const TEMPLATE: &str = include_str!("../../template.yaml");
const OPENAPI: &str = include_str!("../../openapi.yaml");

/// What Lambda's SQS event source mapping does with the apply function's role.
const EVENT_SOURCE_ACTIONS: [&str; 4] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
];
/// What every function needs to log and trace.
const RUNTIME_ACTIONS: [&str; 4] = [
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
];

fn template() -> Value {
    serde_norway::from_str(TEMPLATE).expect("template.yaml is YAML")
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    &template["Resources"][name]
}

/// The value under a CloudFormation short-form tag such as `!GetAtt`.
fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    }
}

fn text(value: &Value) -> &str {
    untag(value)
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, found {value:?}"))
}

fn strings(value: &Value) -> Vec<String> {
    match untag(value) {
        Value::Sequence(items) => items.iter().map(|v| text(v).to_string()).collect(),
        other => vec![text(other).to_string()],
    }
}

const FUNCTIONS: [(&str, &str); 3] = [
    ("IngestFunction", "ingest"),
    ("ApplyFunction", "apply"),
    ("QueryFunction", "query"),
];

/// Every (action, resource) its role grants a function.
fn grants(template: &Value, function: &str) -> Vec<(String, Vec<String>)> {
    let role = text(&resource(template, function)["Properties"]["Role"]);
    let role = role
        .strip_suffix(".Arn")
        .expect("Role is !GetAtt <role>.Arn");
    let mut granted = Vec::new();
    for policy in resource(template, role)["Properties"]["Policies"]
        .as_sequence()
        .unwrap()
    {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            assert_eq!(statement["Effect"], "Allow");
            let resources = strings(&statement["Resource"]);
            for action in strings(&statement["Action"]) {
                granted.push((action, resources.clone()));
            }
        }
    }
    granted
}

#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<BTreeSet<String>>>);

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    /// Both services speak JSON with `x-amz-target: <service>.<Operation>`.
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .ok_or("request without x-amz-target")?;
        let (service, operation) = target.split_once('.').ok_or("malformed x-amz-target")?;
        let service = match service {
            s if s.starts_with("DynamoDB") => "dynamodb",
            "AmazonSQS" => "sqs",
            other => return Err(format!("unexpected service {other}").into()),
        };
        self.0
            .lock()
            .unwrap()
            .insert(format!("{service}:{operation}"));
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// A store that does not answer.
struct DownStore;

impl ChannelStore for DownStore {
    async fn load(
        &self,
        _: &Channel,
        _: usize,
        _: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }

    async fn commit(&self, _: u64, _: &ChannelChange) -> Result<CommitOutcome, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }

    async fn applied(&self, _: &Channel, _: &[MessageNumber]) -> Result<Vec<Envelope>, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }
}

/// Drives each function's handler through its real AWS adapters and returns the actions each
/// one called.
async fn recorded_actions(endpoint: &str) -> HashMap<&'static str, BTreeSet<String>> {
    let config = emulator_config(endpoint).await;
    let table = unique_name("template");
    let setup_dynamodb = aws_sdk_dynamodb::Client::new(&config);
    ensure_table(&setup_dynamodb, &table).await.unwrap();
    let setup_sqs = aws_sdk_sqs::Client::new(&config);
    let settings = QueueSettings {
        visibility_timeout: std::time::Duration::from_secs(30),
        max_receive_count: 5,
    };
    let queues = ensure_queues(&setup_sqs, &unique_name("template"), settings)
        .await
        .unwrap();

    let recorder = Recorder::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(recorder.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .interceptor(recorder.clone())
            .build(),
    );
    let store_client = dynamodb.clone();
    let store = DynamoStore::new(dynamodb, table.clone());
    let queue_url = queues.url.clone();
    let dead_letters = SqsQueue::new(sqs.clone(), queues.dead_letter_url);
    let queue = SqsQueue::new(sqs, queues.url);
    let c = channel(&unique_name("template"));
    let m = flight(&c, 5, &mut Rng::new(1));
    let mut actions = HashMap::new();

    // As deployed with auth on: the sender the authorizer vouched for claims the channel.
    let owners = rockets_aws::DynamoOwners::new(store_client.clone(), table.clone());
    let mut event = serde_json::to_value(rockets::http::api_gateway_event(
        Method::POST,
        "/messages",
        None,
        HeaderMap::new(),
        m[0].to_json().into_bytes(),
    ))
    .unwrap();
    event["requestContext"]["authorizer"] =
        serde_json::json!({"jwt": {"claims": {"sub": "sender"}}});
    let handler = |route, request| ingest::handle(&queue, &owners, route, request);
    let served = rockets::http::serve_event(&handler, serde_json::from_value(event).unwrap()).await;
    assert_eq!(served.response.status_code, 202);
    actions.insert("ingest", recorder.take());

    // A gap (4 parks, within the limit; 5 lies past it), the gap's filling, and a resend;
    // then a parked message that expires: every path of the apply side.
    let settings = apply::Settings {
        park_limit: 3,
        ..apply::Settings::default()
    };
    let expired = apply::Settings {
        parked_retention: Duration::ZERO,
        ..settings
    };
    let later = channel(&unique_name("template"));
    let l = flight(&later, 3, &mut Rng::new(2));
    for (batch, settings) in [
        (vec![&m[3], &m[4]], &settings),
        (vec![&m[0], &m[1], &m[2]], &settings),
        (vec![&m[0]], &settings),
        (vec![&l[2]], &settings),
        (vec![&l[0]], &expired),
    ] {
        let mut event = SqsEvent::default();
        event.records = batch
            .iter()
            .map(|e| sqs_record(&unique_name("record"), e))
            .collect();
        let response = apply::handle(&store, &queue, &dead_letters, settings, event)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    // And a store that does not answer: the records back off. (The record is sent and
    // received by the event source mapping, not the function: a client that is not recorded.)
    let source = SqsQueue::new(setup_sqs.clone(), queue_url.clone());
    source.send(&m[1]).await.unwrap();
    let mut event = SqsEvent::default();
    event.records = source.receive(10, Duration::from_secs(1)).await.unwrap();
    let received = event.records.len();
    assert!(received >= 1, "ingest's message and this one");
    let response = apply::handle(&DownStore, &queue, &dead_letters, &settings, event)
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), received);
    actions.insert("apply", recorder.take());

    for path in [
        "/rockets",
        &format!("/rockets/{c}"),
        &format!("/rockets/{c}/events"),
        "/health",
    ] {
        let get = api_gateway_request(Method::GET, path, None, HeaderMap::new(), Vec::new())
            .expect("a convertible request");
        assert_eq!(
            rockets::http::respond(|route, request| query::handle(&store, route, request), get)
                .await
                .status(),
            200,
            "{path}"
        );
    }
    actions.insert("query", recorder.take());
    actions
}

/// Every SDK operation a source file sends, as IAM actions (`.put_item()` is `PutItem`).
fn operations_in(source: &str, service: &str) -> BTreeSet<String> {
    let flat: String = source.split_whitespace().collect();
    flat.split(".client.")
        .skip(1)
        .filter_map(|rest| rest.split_once("()").map(|(call, _)| call))
        .filter(|call| *call != "clone")
        .map(|call| {
            let pascal: String = call
                .split('_')
                .map(|word| word[..1].to_uppercase() + &word[1..])
                .collect();
            format!("{service}:{pascal}")
        })
        .collect()
}

#[tokio::test]
async fn every_action_the_code_calls_is_granted_and_nothing_more() {
    let Some(endpoint) = emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    let template = template();
    let recorded = recorded_actions(&endpoint).await;

    // Whatever the store and queue adapters can send, the handlers above did send, so the
    // recording is complete. The queue's consuming side is the local server's alone.
    let dynamodb_ops: BTreeSet<String> = [
        include_str!("../../shared/aws/src/dynamo/mod.rs"),
        include_str!("../../shared/aws/src/dynamo/channel.rs"),
        include_str!("../../shared/aws/src/dynamo/reader.rs"),
        include_str!("../../shared/aws/src/dynamo/owners.rs"),
    ]
    .into_iter()
    .flat_map(|source| operations_in(source, "dynamodb"))
    .collect();
    let sqs_ops = operations_in(include_str!("../../shared/aws/src/sqs.rs"), "sqs");
    // The local server's alone: consuming, and finding the dead-letter queue from the redrive
    // policy (the template names it).
    let consumer_only: BTreeSet<String> = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessageBatch",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    ]
    .map(String::from)
    .into();
    let everything: BTreeSet<String> = recorded.values().flatten().cloned().collect();
    for op in dynamodb_ops
        .iter()
        .chain(sqs_ops.difference(&consumer_only))
    {
        assert!(
            everything.contains(op),
            "{op} is in the code but no handler here called it"
        );
    }

    for (function, name) in FUNCTIONS {
        let granted = grants(&template, function);
        let actions: BTreeSet<&str> = granted.iter().map(|(a, _)| a.as_str()).collect();
        for action in &recorded[name] {
            // SQS authorises a batch call as its single-message action.
            let action = match action.strip_prefix("sqs:") {
                Some(operation) => format!("sqs:{}", operation.trim_end_matches("Batch")),
                None => action.clone(),
            };
            assert!(
                actions.contains(action.as_str()),
                "{function} calls {action}, not granted"
            );
        }
        for (action, resources) in &granted {
            assert!(
                !action.contains('*'),
                "{function}: wildcard action {action}"
            );
            let needed = recorded[name].contains(action)
                || recorded[name].contains(&format!("{action}Batch"))
                || RUNTIME_ACTIONS.contains(&action.as_str())
                || (name == "apply" && EVENT_SOURCE_ACTIONS.contains(&action.as_str()));
            assert!(
                needed,
                "{function} is granted {action}, which it never calls"
            );
            if !action.starts_with("xray:") {
                assert!(
                    !resources.iter().any(|r| r == "*"),
                    "{function}: {action} on *"
                );
            }
        }
    }
}

#[test]
fn every_route_is_routed_to_the_function_that_serves_it() {
    let template = template();
    for (function, name) in FUNCTIONS {
        let mut routed = BTreeSet::new();
        let events = resource(&template, function)["Properties"]["Events"].as_mapping();
        for (_, event) in events.into_iter().flatten() {
            if event["Type"] == "HttpApi" {
                let method = text(&event["Properties"]["Method"]).to_string();
                routed.insert((method, text(&event["Properties"]["Path"]).to_string()));
                assert_eq!(text(&event["Properties"]["ApiId"]), "HttpApi");
            }
        }
        let serves: BTreeSet<(String, String)> = ROUTES
            .iter()
            .filter(|spec| match spec.function {
                Function::Ingest => name == "ingest",
                Function::Query => name == "query",
            })
            .map(|spec| (spec.method.to_string(), spec.path.to_string()))
            .collect();
        assert_eq!(routed, serves, "{function}");
    }
}

#[test]
fn the_openapi_document_describes_exactly_the_routes_the_template_and_the_code_serve() {
    let document: Value = serde_norway::from_str(OPENAPI).unwrap();
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut described = BTreeSet::new();
    for (path, item) in document["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let method = text(method);
            if methods.contains(&method) {
                described.insert((method.to_uppercase(), text(path).to_string()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|spec| (spec.method.to_string(), spec.path.to_string()))
        .collect();
    assert_eq!(described, served);

    let template = template();
    let mut routed = BTreeSet::new();
    for (function, _) in FUNCTIONS {
        let events = resource(&template, function)["Properties"]["Events"].as_mapping();
        for (_, event) in events.into_iter().flatten() {
            if event["Type"] == "HttpApi" {
                routed.insert((
                    text(&event["Properties"]["Method"]).to_string(),
                    text(&event["Properties"]["Path"]).to_string(),
                ));
            }
        }
    }
    assert_eq!(described, routed);
}

#[test]
fn every_environment_variable_a_function_reads_is_set() {
    let template = template();
    let mains = [
        include_str!("../../functions/ingest/src/main.rs"),
        include_str!("../../functions/apply/src/main.rs"),
        include_str!("../../functions/query/src/main.rs"),
    ];
    for ((function, _), main) in FUNCTIONS.iter().zip(mains) {
        let variables = &resource(&template, function)["Properties"]["Environment"]["Variables"];
        let reads = [
            ("SqsQueue::from_env", SqsQueue::ENV),
            (
                "SqsQueue::dead_letters_from_env",
                SqsQueue::DEAD_LETTERS_ENV,
            ),
            ("DynamoStore::from_env", DynamoStore::ENV),
            ("DynamoOwners::from_env", rockets_aws::DynamoOwners::ENV),
            ("DynamoOwners::from_env", DynamoStore::ENV),
            ("Settings::from_env", apply::Settings::PARK_LIMIT_ENV),
            ("Settings::from_env", apply::Settings::PARKED_RETENTION_ENV),
            (
                "with_history_retention_from_env",
                DynamoStore::HISTORY_RETENTION_ENV,
            ),
        ];
        let mut read_any = false;
        for (call, variable) in reads {
            if main.contains(call) {
                read_any = true;
                assert!(
                    !variables[variable].is_null(),
                    "{function} reads {variable}, not set"
                );
            }
        }
        assert!(
            read_any,
            "{function} reads no configuration? the test needs updating"
        );
        assert!(
            !main.contains("std::env::var"),
            "{function} reads the environment directly"
        );
    }
}

#[test]
fn the_settings_cfn_lint_does_not_check() {
    let template = template();
    // A channel belongs to its first sender exactly when writes need auth.
    let owners = &resource(&template, "IngestFunction")["Properties"]["Environment"]["Variables"]
        [rockets_aws::DynamoOwners::ENV];
    assert_eq!(strings(owners), ["OpenWrites", "off", "on"]);
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["Tracing"], "Active");

    for (function, binary) in FUNCTIONS {
        let f = resource(&template, function);
        assert_eq!(
            f["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{function}"
        );
        assert_eq!(
            f["Metadata"]["BuildProperties"]["Binary"], binary,
            "{function}"
        );
        assert_eq!(
            f["Properties"]["LoggingConfig"]["LogFormat"], "JSON",
            "{function}"
        );
        let manifest = std::fs::read_to_string(format!(
            "{}/../functions/{binary}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{binary} is a workspace package"
        );
    }

    let apply = &resource(&template, "ApplyFunction")["Properties"];
    let source = &apply["Events"]["Messages"]["Properties"];
    assert_eq!(apply["Events"]["Messages"]["Type"], "SQS");
    assert_eq!(
        strings(&source["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    let batch_size = source["BatchSize"].as_u64().unwrap();
    assert!(
        (1..=10).contains(&batch_size),
        "a FIFO batch holds at most 10"
    );
    assert_eq!(text(&source["Queue"]), "MessageQueue.Arn");

    let queue = &resource(&template, "MessageQueue")["Properties"];
    let dead = &resource(&template, "DeadLetterQueue")["Properties"];
    for q in [queue, dead] {
        assert_eq!(q["FifoQueue"], true);
        assert!(
            text(&q["QueueName"]).ends_with(".fifo"),
            "FIFO queue names end in .fifo"
        );
        assert_eq!(q["SqsManagedSseEnabled"], true, "encrypted at rest");
    }
    assert_eq!(
        queue["ContentBasedDeduplication"], false,
        "ingest sets deduplication ids"
    );
    let timeout = apply["Timeout"].as_u64().unwrap();
    for function in ["IngestFunction", "QueryFunction", "ApplyFunction"] {
        let limit = resource(&template, function)["Properties"]["Timeout"]
            .as_u64()
            .unwrap();
        assert!(
            rockets_aws::OPERATION_TIMEOUT < Duration::from_secs(limit),
            "an AWS call may outlast {function}'s {limit} s"
        );
    }
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout);
    assert_eq!(
        queue["VisibilityTimeout"].as_u64().unwrap(),
        apply::VISIBILITY_TIMEOUT.as_secs(),
        "apply backs off from the queue's visibility timeout"
    );
    assert_eq!(
        text(&queue["RedrivePolicy"]["deadLetterTargetArn"]),
        "DeadLetterQueue.Arn"
    );
    // A valid message outlasts a twelve-hour table outage in the queue: what it is hidden for
    // at each receive before its last adds up to that.
    let receives = queue["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap() as u32;
    let outlasted: Duration = (1..receives)
        .map(|count| apply::outage_backoff(apply::VISIBILITY_TIMEOUT, count))
        .sum();
    assert!(
        outlasted >= Duration::from_secs(12 * 60 * 60),
        "{outlasted:?}"
    );
    assert!(apply::Settings::default().permanent_receives < receives);
    // A drain stops at its budget with time left for the round in flight, and goes on in a
    // continuation: no invocation runs into its timeout.
    assert!(
        apply::Settings::default().drain_budget + rockets_aws::OPERATION_TIMEOUT
            < Duration::from_secs(timeout),
        "apply's timeout leaves no room for its drain's last round"
    );
    let allow = &dead["RedriveAllowPolicy"];
    let permission = text(&allow["redrivePermission"]);
    assert!(
        ["allowAll", "denyAll", "byQueue"].contains(&permission),
        "{permission}"
    );
    assert_eq!(permission, "byQueue");
    let sources = strings(&allow["sourceQueueArns"]);
    assert_eq!(sources.len(), 1);
    let source_name = text(&queue["QueueName"]);
    assert!(
        sources[0].ends_with(&format!(":{source_name}")),
        "only the source queue may redrive"
    );

    let table = &resource(&template, "RocketTable")["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    // The one index, as the store creates it on a local endpoint and scans it.
    let indexes = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(indexes.len(), 1);
    assert_eq!(indexes[0]["IndexName"], "listing");
    assert_eq!(indexes[0]["KeySchema"][0]["AttributeName"], "by_channel");
    assert_eq!(indexes[0]["KeySchema"].as_sequence().unwrap().len(), 1);
    assert_eq!(indexes[0]["Projection"]["ProjectionType"], "INCLUDE");
    assert_eq!(indexes[0]["Projection"]["NonKeyAttributes"][0], "rocket");

    for alarm in ["DeadLetterAlarm", "QueueAgeAlarm"] {
        assert_eq!(resource(&template, alarm)["Type"], "AWS::CloudWatch::Alarm");
    }
    for output in ["ApiUrl", "QueueUrl", "DeadLetterQueueUrl", "TableName"] {
        assert!(!template["Outputs"][output].is_null(), "output {output}");
    }
}

#[test]
fn provisioned_queues_are_configured_as_the_template_configures_them() {
    use rockets_aws::provision::{dead_letter_attributes, queue_attributes};
    let template = template();
    let settings = QueueSettings::default();
    let queue = &resource(&template, "MessageQueue")["Properties"];
    assert_eq!(
        queue["RedrivePolicy"]["maxReceiveCount"].as_u64(),
        Some(u64::from(settings.max_receive_count))
    );
    assert_eq!(
        rockets_embedded::QueueConfig::default().visibility_timeout,
        settings.visibility_timeout,
        "the local server's queue behaves as the deployed one"
    );
    for (properties, provisioned, not_provisioned) in [
        (
            queue,
            queue_attributes(&settings),
            &["QueueName", "RedrivePolicy"][..],
        ),
        (
            &resource(&template, "DeadLetterQueue")["Properties"],
            dead_letter_attributes(),
            &["QueueName", "RedriveAllowPolicy"][..],
        ),
    ] {
        let provisioned: HashMap<String, String> = provisioned
            .into_iter()
            .map(|(name, value)| (name.as_str().to_string(), value))
            .collect();
        for (name, value) in properties.as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            if not_provisioned.contains(&name) {
                continue;
            }
            let value = match value {
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => text(other).to_string(),
            };
            assert_eq!(provisioned.get(name), Some(&value), "{name}");
        }
        assert_eq!(
            provisioned.len() + not_provisioned.len(),
            properties.as_mapping().unwrap().len(),
            "provisioned but not in the template: {provisioned:?}"
        );
    }
}

/// A tagged value's tag (`!Ref`, `!Sub`, …), for checks that care which function it is.
fn tag(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) => Some(tagged.tag.to_string()),
        _ => None,
    }
}

fn alarm<'a>(template: &'a Value, name: &str) -> &'a Value {
    let alarm = resource(template, name);
    assert_eq!(alarm["Type"], "AWS::CloudWatch::Alarm", "{name}");
    &alarm["Properties"]
}

#[test]
fn operators_get_alarms_a_dashboard_and_safe_deploys() {
    use rockets::metrics::names;
    let template = template();

    // Errors and throttles of every function, on that function.
    for (function, _) in FUNCTIONS {
        let short = function.trim_end_matches("Function");
        for (suffix, metric) in [("ErrorsAlarm", "Errors"), ("ThrottlesAlarm", "Throttles")] {
            let alarm = alarm(&template, &format!("{short}{suffix}"));
            assert_eq!(alarm["Namespace"], "AWS/Lambda");
            assert_eq!(alarm["MetricName"], metric);
            assert_eq!(text(&alarm["Dimensions"][0]["Value"]), function);
        }
    }
    // The API's error rates, over its own requests.
    for (name, metric) in [("Api5xxAlarm", "5xx"), ("Api4xxAlarm", "4xx")] {
        let metrics = &alarm(&template, name)["Metrics"];
        assert_eq!(metrics[0]["MetricStat"]["Metric"]["MetricName"], metric);
        assert_eq!(metrics[1]["MetricStat"]["Metric"]["MetricName"], "Count");
        assert_eq!(
            text(&metrics[0]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]),
            "HttpApi"
        );
    }
    // DynamoDB throttles: the table, and every index of it.
    let table = &alarm(&template, "TableThrottlesAlarm")["Metrics"];
    assert_eq!(
        text(&table[0]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]),
        "RocketTable"
    );
    for name in ["IndexWriteThrottlesAlarm", "IndexReadThrottlesAlarm"] {
        let query = text(&alarm(&template, name)["Metrics"][0]["Expression"]).to_string();
        assert!(
            query.contains("GlobalSecondaryIndexName") && query.contains("${RocketTable}"),
            "{name}: {query}"
        );
    }
    // The custom metrics alarmed on exist, in the configured namespace.
    let conflicts = alarm(&template, "ConflictsAlarm");
    assert_eq!(text(&conflicts["Namespace"]), "MetricsNamespace");
    assert_eq!(conflicts["MetricName"], names::CONFLICTS);
    // Apply at its cap: the alarm's threshold is the event source's own cap.
    let cap = alarm(&template, "ApplyConcurrencyAlarm");
    let source = &resource(&template, "ApplyFunction")["Properties"]["Events"]["Messages"]["Properties"]
        ["ScalingConfig"]["MaximumConcurrency"];
    assert_eq!(text(&cap["Threshold"]), text(source));
    assert_eq!(text(source), "ApplyMaxConcurrency");

    // The dashboard is JSON once substituted, and names only metrics the code emits.
    let body = &resource(&template, "Dashboard")["Properties"]["DashboardBody"];
    let json = text(&untag(body)[0]);
    let substituted = substitute_placeholders(json);
    let dashboard: serde_json::Value =
        serde_json::from_str(&substituted).expect("the dashboard body is JSON");
    let mut custom = BTreeSet::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        let mut namespace = String::new();
        for metric in widget["properties"]["metrics"].as_array().unwrap() {
            let metric = metric.as_array().unwrap();
            match metric[0].as_str() {
                Some(".") | Some("...") => {}
                Some(n) => namespace = n.to_string(),
                None => {}
            }
            if namespace == "NS" && metric.len() > 1 && metric[0] != "..." {
                custom.insert(metric[1].as_str().unwrap().to_string());
            }
        }
    }
    for name in &custom {
        assert!(
            names::ALL.contains(&name.as_str()),
            "dashboard metric {name}"
        );
    }
    assert!(custom.len() >= 8, "{custom:?}");

    // Deploys of the API functions, gradual where DeploymentType says so (a prod stack must),
    // rolled back only by the new version's own errors: the alias's ExecutedVersion.
    assert_eq!(template["Globals"]["Function"]["AutoPublishAlias"], "live");
    for function in ["IngestFunction", "QueryFunction"] {
        let preference = &resource(&template, function)["Properties"]["DeploymentPreference"];
        assert_eq!(text(&preference["Type"]), "DeploymentType");
        let alarms = strings(&preference["Alarms"]);
        let own = format!(
            "{}NewVersionErrorsAlarm",
            function.trim_end_matches("Function")
        );
        assert_eq!(alarms, std::slice::from_ref(&own));
        let dimensions = alarm(&template, &own)["Dimensions"].as_sequence().unwrap();
        let dimension = |name: &str| {
            let found = dimensions.iter().find(|d| d["Name"] == name);
            text(&found.unwrap_or_else(|| panic!("{own} has no {name}"))["Value"]).to_string()
        };
        assert_eq!(dimension("FunctionName"), function);
        assert_eq!(dimension("Resource"), format!("${{{function}}}:live"));
        assert_eq!(
            dimension("ExecutedVersion"),
            format!("{function}.Version.Version")
        );
    }
    assert_eq!(
        template["Parameters"]["DeploymentType"]["Default"],
        "AllAtOnce"
    );
    let prod = &template["Rules"]["ProdIsWatchedGuardedAndGradual"];
    let asserted =
        serde_json::to_string(&serde_json::to_value(&prod["Assertions"]).unwrap()).unwrap();
    for parameter in ["AlarmTopicArn", "AuthMode", "DeploymentType"] {
        assert!(asserted.contains(parameter), "prod asserts {parameter}");
    }
    // Every alarm notifies the topic when it fires and when it clears.
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] == "AWS::CloudWatch::Alarm" {
            let properties = &resource["Properties"];
            assert_eq!(
                properties["OKActions"], properties["AlarmActions"],
                "{name:?} notifies on OK as on alarm"
            );
            assert!(!properties["OKActions"].is_null(), "{name:?}");
        }
    }
    // A table outage is alarmed on at once; a stall past the configured minutes, and it clears.
    let outage = alarm(&template, "StoreOutageAlarm");
    assert_eq!(outage["MetricName"], names::STORE_UNAVAILABLE);
    let stall = alarm(&template, "StallAlarm");
    assert_eq!(text(&stall["Threshold"]), "StallAlarmMinutes");
    assert_eq!(
        stall["Metrics"][0]["MetricStat"]["Metric"]["MetricName"],
        names::OLDEST_STALL_AGE
    );
    assert_eq!(stall["Metrics"][1]["Expression"], "age / 60", "in minutes");
    let schedule = &resource(&template, "QueryFunction")["Properties"]["Events"]["StallCheck"];
    assert_eq!(schedule["Type"], "Schedule");
    // Data that outlives the stack.
    for name in ["RocketTable", "DeadLetterQueue"] {
        let r = resource(&template, name);
        assert_eq!(r["DeletionPolicy"], "Retain", "{name}");
        assert_eq!(r["UpdateReplacePolicy"], "Retain", "{name}");
    }
    // History expires only after the dead-letter queue has let go of its messages.
    let ttl = &resource(&template, "RocketTable")["Properties"]["TimeToLiveSpecification"];
    assert_eq!(ttl["AttributeName"], "expiresAt");
    let dlq_days = resource(&template, "DeadLetterQueue")["Properties"]["MessageRetentionPeriod"]
        .as_u64()
        .unwrap()
        / 86_400;
    for days in strings(&template["Parameters"]["HistoryRetentionDays"]["AllowedValues"]) {
        let days: u64 = days.parse().unwrap();
        assert!(days == 0 || days >= dlq_days, "{days} days of history");
    }
    // JSON access logs.
    let logs = &resource(&template, "HttpApi")["Properties"]["AccessLogSettings"];
    assert_eq!(tag(&logs["DestinationArn"]).as_deref(), Some("!GetAtt"));
    let format = text(&logs["Format"]).replace('\n', " ");
    let format: serde_json::Value = serde_json::from_str(&format).expect("a JSON log format");
    assert!(format["status"].is_string() && format["routeKey"].is_string());
    // What an operator looks up.
    for output in [
        "DeadLetterQueueArn",
        "IngestFunctionName",
        "ApplyFunctionName",
        "QueryFunctionName",
        "IngestLogGroupName",
        "ApplyLogGroupName",
        "QueryLogGroupName",
        "DashboardUrl",
    ] {
        assert!(!template["Outputs"][output].is_null(), "output {output}");
    }
}

/// The dashboard body with every `${...}` replaced: the namespace by `NS`, the rest by `x`.
fn substitute_placeholders(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${") + start;
        let name = &rest[start + 2..end];
        out.push_str(if name == "MetricsNamespace" {
            "NS"
        } else {
            "x"
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_samconfig_parameter_override_names_a_template_parameter_and_an_allowed_value() {
    let template = template();
    let samconfig = include_str!("../../samconfig.toml");
    let mut checked = 0;
    for line in samconfig.lines() {
        let Some(overrides) = line.strip_prefix("parameter_overrides = \"") else {
            continue;
        };
        for pair in overrides.trim_end_matches('"').split_whitespace() {
            let (name, value) = pair.split_once('=').expect("Name=Value");
            let parameter = &template["Parameters"][name];
            assert!(!parameter.is_null(), "{name} is not a template parameter");
            if !parameter["AllowedValues"].is_null() {
                let allowed = strings(&parameter["AllowedValues"]);
                assert!(allowed.contains(&value.to_string()), "{name}={value}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} overrides");
}
