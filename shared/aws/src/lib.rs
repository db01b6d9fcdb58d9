//! The AWS backends: the rocket table in DynamoDB and the FIFO queue in SQS.
//!
//! Endpoints, region and credentials come from the SDK's standard sources, so the same code
//! talks to AWS, LocalStack or an emulator: `AWS_ENDPOINT_URL` (or the per-service
//! `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SQS`, which win), `AWS_REGION`, and the
//! default credential chain. Resource names come from `TABLE_NAME` and `QUEUE_URL`, as the SAM
//! template sets them.
//!
//! - `dynamo`: [`DynamoStore`], the table behind both store ports.
//! - `sqs`: [`SqsQueue`], the FIFO queue, and its dead-letter queue as a [`RedriveTarget`].
//! - [`provision`]: creating the table and queues as the template does, for local endpoints.

mod dynamo;
pub mod provision;
mod sqs;

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};

pub use dynamo::{DynamoOwners, DynamoStore, Item, MessageItem, TableLayout};
pub use sqs::{RedriveTarget, SqsQueue};

use rockets::ports::{Cause, StoreError};

/// Loads the SDK configuration once per process (per Lambda container), outside any handler.
///
/// The standard retry mode retries throttling and transient errors with jittered backoff, up
/// to three attempts. Every call is bounded: [`ATTEMPT_TIMEOUT`] an attempt and
/// [`OPERATION_TIMEOUT`] in all, retries included, below the 5 s the ingest and query functions
/// may run, so a hung endpoint is a 503 the sender can retry rather than a function timeout.
pub async fn sdk_config() -> SdkConfig {
    config_loader().load().await
}

/// The loader behind [`sdk_config`], for callers that override part of it.
pub fn config_loader() -> aws_config::ConfigLoader {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if credentials_in_environment(&names) {
        // What the default chain would pick first, without building the rest of the chain (an
        // STS client among them) at every cold start; Lambda always sets these.
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader
        .http_client(Roots::for_environment(&names).http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(4_500);

/// SDK configuration for an emulator: the project's own client settings, with the emulator's
/// endpoint, a fixed region and dummy credentials.
pub async fn emulator_config(endpoint: &str) -> SdkConfig {
    config_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "emulator",
        ))
        .load()
        .await
}

/// The roots of Amazon Trust Services, which issues the certificate of every AWS endpoint:
/// Amazon Root CA 1 to 4 and Starfield Services Root Certificate Authority - G2, which
/// cross-signs them (https://www.amazontrust.com/repository/).
const AMAZON_TRUST_SERVICES: &str = include_str!("amazon-trust-services.pem");

/// Whether the environment holds credentials, which the SDK's default chain tries first.
fn credentials_in_environment(env_names: &[String]) -> bool {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .iter()
        .all(|wanted| env_names.iter().any(|name| name == wanted))
}

/// Which root certificates the HTTP client trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Roots {
    AmazonTrustServices,
    System,
}

impl Roots {
    /// Talking to AWS itself needs only Amazon's five roots, and parsing five certificates at
    /// start-up instead of the system's whole store (about 150 on Amazon Linux, twice that on
    /// Debian) is most of the cold start a function can save. An endpoint override
    /// (LocalStack, an emulator, a proxy) or `SSL_CERT_FILE` / `SSL_CERT_DIR` means another
    /// certificate may be in play, so then the system's store is trusted, as those direct.
    fn for_environment(env_names: &[String]) -> Self {
        let elsewhere = env_names.iter().any(|name| {
            name == "SSL_CERT_FILE"
                || name == "SSL_CERT_DIR"
                || name.starts_with("AWS_ENDPOINT_URL")
        });
        if elsewhere {
            Roots::System
        } else {
            Roots::AmazonTrustServices
        }
    }

    /// An HTTPS client, rustls on ring, trusting these roots.
    fn http_client(self) -> SharedHttpClient {
        let trust_store = match self {
            Roots::AmazonTrustServices => {
                TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES)
            }
            Roots::System => TrustStore::default(),
        };
        let tls = TlsContext::builder()
            .with_trust_store(trust_store)
            .build()
            .expect("a TLS context without extra server names builds");
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls)
            .build_https()
    }
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

/// Classifies an SDK error: transient ones (throttling, a 5xx, a timeout, a connection that
/// failed) become `Unavailable`, the rest (access denied, a missing table, a validation error)
/// `Failed`.
pub(crate) fn store_error<E>(
    what: &str,
    error: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    let transient = match &error {
        SdkError::ServiceError(service) => {
            service
                .err()
                .code()
                .is_some_and(|code| TRANSIENT_CODES.contains(&code))
                || service.raw().status().is_server_error()
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    let cause = Cause::new(format!("{what}: {}", DisplayErrorContext(&error)), error);
    if transient {
        StoreError::Unavailable(cause)
    } else {
        StoreError::Failed(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn amazon_roots_unless_the_environment_points_elsewhere() {
        let aws = names(&["AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME", "QUEUE_URL"]);
        assert_eq!(Roots::for_environment(&aws), Roots::AmazonTrustServices);
        for elsewhere in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SQS",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            let mut env = aws.clone();
            env.push(elsewhere.into());
            assert_eq!(Roots::for_environment(&env), Roots::System, "{elsewhere}");
        }
    }

    #[test]
    fn an_sdk_error_is_kept_as_the_source_of_the_store_error() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::SdkError;
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        let timeout: SdkError<GetItemError, HttpResponse> =
            SdkError::timeout_error("took too long");
        let error = store_error("get state", timeout);
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(error.to_string().contains("get state"), "{error}");
        let cause = std::error::Error::source(&error).expect("the cause");
        let sdk = cause.source().expect("the SDK error");
        assert!(
            sdk.downcast_ref::<SdkError<GetItemError, HttpResponse>>()
                .is_some()
        );
    }

    #[test]
    fn throttling_and_server_errors_pass_and_refusals_do_not() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_types::body::SdkBody;
        let answered = |status: u16, code: &str| {
            let error = GetItemError::generic(ErrorMetadata::builder().code(code).build());
            let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            store_error("get state", SdkError::service_error(error, raw))
        };
        for (status, code) in [
            (400, "ThrottlingException"),
            (400, "ProvisionedThroughputExceededException"),
            (500, "InternalServerError"),
            (503, "SomethingNew"),
        ] {
            let error = answered(status, code);
            assert!(
                matches!(error, StoreError::Unavailable(_)),
                "{code}: {error}"
            );
        }
        for (status, code) in [
            (400, "AccessDeniedException"),
            (400, "ResourceNotFoundException"),
            (400, "ValidationException"),
        ] {
            let error = answered(status, code);
            assert!(matches!(error, StoreError::Failed(_)), "{code}: {error}");
        }
        let unreachable: SdkError<GetItemError, HttpResponse> = SdkError::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io("refused".into()),
        );
        assert!(matches!(
            store_error("get state", unreachable),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn credentials_from_the_environment_only_when_both_halves_are_there() {
        let both = names(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ]);
        assert!(credentials_in_environment(&both));
        assert!(!credentials_in_environment(&names(&["AWS_ACCESS_KEY_ID"])));
        assert!(!credentials_in_environment(&names(&["AWS_PROFILE"])));
    }

    #[tokio::test]
    async fn amazon_roots_parse_when_a_client_is_built() {
        assert_eq!(
            AMAZON_TRUST_SERVICES
                .matches("-----BEGIN CERTIFICATE-----")
                .count(),
            5
        );
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .http_client(Roots::AmazonTrustServices.http_client())
            .build();
        // Building the client builds its TLS connector, which panics on a certificate it
        // cannot parse.
        let _ = aws_sdk_sqs::Client::from_conf(config);
    }
}
