use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rockets::aws::{DynamoStore, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let store = DynamoStore::from_env(&sdk_config().await)?;
    let store = &store;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        apply::handle(store, event.payload).await
    }))
    .await
}
