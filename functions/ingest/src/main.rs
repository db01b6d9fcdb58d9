use lambda_runtime::Error;
use rockets::aws::{SqsQueue, sdk_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let queue = SqsQueue::from_env(&sdk_config().await)?;
    let queue = &queue;
    rockets::http::run(|request| ingest::handle(queue, request)).await
}
