use lambda_runtime::Error;
use rockets_aws::{SqsQueue, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let queue = SqsQueue::from_env(&sdk_config().await)?;
    let queue = &queue;
    rockets::http::run(rockets::http::Function::Ingest, |route, request| {
        ingest::handle(queue, route, request)
    })
    .await
}
