use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rockets_aws::{DynamoStore, SqsQueue, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let config = sdk_config().await;
    let store = DynamoStore::from_env(&config)?;
    // The queue the records come from, to back off records the store could not take.
    let queue = SqsQueue::from_env(&config)?;
    let (store, queue) = (&store, &queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        apply::handle(store, queue, apply::VISIBILITY_TIMEOUT, event.payload).await
    }))
    .await
}
