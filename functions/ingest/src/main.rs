use lambda_http::{Error, service_fn};
use rockets::aws::{SqsQueue, sdk_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let queue = SqsQueue::from_env(&sdk_config().await)?;
    let queue = &queue;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Error>(ingest::handle(queue, request).await)
    }))
    .await
}
