use lambda_runtime::Error;
use rockets::aws::{DynamoStore, sdk_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let store = DynamoStore::from_env(&sdk_config().await)?;
    let store = &store;
    rockets::http::run(|request| query::handle(store, request)).await
}
