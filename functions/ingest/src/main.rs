use lambda_runtime::Error;
use rockets_aws::{DynamoOwners, SqsQueue, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let sdk = sdk_config().await;
    let queue = SqsQueue::from_env(&sdk)?;
    let owners = DynamoOwners::from_env(&sdk)?;
    let (queue, owners) = (&queue, &owners);
    rockets::http::run(rockets::http::Function::Ingest, |route, request| {
        ingest::handle(queue, owners, route, request)
    })
    .await
}
