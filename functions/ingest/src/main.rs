use lambda_http::{Error, service_fn};
use rockets::embedded::{EmbeddedQueue, QueueConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let queue = EmbeddedQueue::new(QueueConfig::default());
    let queue = &queue;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Error>(ingest::handle(queue, request).await)
    }))
    .await
}
