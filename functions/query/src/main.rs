use lambda_runtime::Error;
use rockets_aws::{DynamoStore, sdk_config};

fn main() -> Result<(), Error> {
    rockets::config::run_main(run())
}

async fn run() -> Result<(), Error> {
    rockets::telemetry::init();
    let store = DynamoStore::from_env(&sdk_config().await)?;
    let store = &store;
    rockets::http::run_with_schedule(
        rockets::http::Function::Query,
        |route, request| query::handle(store, route, request),
        || query::check_stalls(store),
    )
    .await
}
