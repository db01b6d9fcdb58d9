//! A second floor for cold starts: `hello` plus what every function that talks to AWS builds
//! at init, the SDK configuration and one client, configured as the functions configure them.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sqs = aws_sdk_sqs::Client::new(&rockets_aws::sdk_config().await);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let _client = &sqs;
        async move { Ok::<Value, Error>(event.payload) }
    }))
    .await
}
