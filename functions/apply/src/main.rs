use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rockets_aws::{DynamoStore, RedriveTarget, SqsQueue, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let config = sdk_config().await;
    let store = DynamoStore::from_env(&config)?.with_history_retention_from_env()?;
    // The queue the records come from, to back off records the store could not take.
    let queue = SqsQueue::from_env(&config)?;
    // Where a message over the park limit goes, for an operator to redrive.
    let dead_letters =
        RedriveTarget::known(queue.clone(), SqsQueue::dead_letters_from_env(&config)?);
    let settings = apply::Settings::from_env()?;
    let (store, queue, dead_letters, settings) = (&store, &queue, &dead_letters, &settings);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        apply::handle(store, queue, dead_letters, settings, event.payload).await
    }))
    .await
}
