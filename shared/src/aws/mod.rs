//! The AWS backends: the rocket table in DynamoDB and the FIFO queue in SQS.
//!
//! Endpoints, region and credentials come from the SDK's standard sources, so the same code
//! talks to AWS, LocalStack or an emulator: `AWS_ENDPOINT_URL` (or the per-service
//! `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SQS`, which win), `AWS_REGION`, and the
//! default credential chain. Resource names come from `TABLE_NAME` and `QUEUE_URL`, as the SAM
//! template sets them.

mod dynamo;
pub mod provision;
mod sqs;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub use dynamo::{Capacity, DynamoStore, index_attribute, index_name};
pub use sqs::SqsQueue;

use crate::ports::StoreError;

/// Loads the SDK configuration once per process (per Lambda container), outside any handler.
///
/// The standard retry mode retries throttling and transient errors with jittered backoff, up
/// to three attempts; connection setup is bounded so a bad endpoint fails fast.
pub async fn sdk_config() -> SdkConfig {
    config_loader().load().await
}

/// The loader behind [`sdk_config`], for callers that override part of it.
pub fn config_loader() -> aws_config::ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .build(),
        )
}

/// Error codes that mean "try again later" once the SDK's own retries are spent.
const TRANSIENT_CODES: [&str; 6] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
];

/// Classifies an SDK error: transient ones become `Unavailable`, the rest `Failed`.
pub(crate) fn store_error<E, R>(
    what: &str,
    error: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::SdkError;
    let transient = match &error {
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    let detail = format!("{what}: {}", DisplayErrorContext(&error));
    if transient {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Failed(detail)
    }
}
