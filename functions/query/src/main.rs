use lambda_http::{Error, service_fn};
use rockets::aws::{DynamoStore, sdk_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let store = DynamoStore::from_env(&sdk_config().await)?;
    let store = &store;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Error>(query::handle(store, request).await)
    }))
    .await
}
