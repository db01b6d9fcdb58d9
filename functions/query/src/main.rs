use lambda_http::{Error, service_fn};
use rockets::embedded::EmbeddedStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    rockets::telemetry::init();
    let store = EmbeddedStore::new();
    let store = &store;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Error>(query::handle(store, request).await)
    }))
    .await
}
