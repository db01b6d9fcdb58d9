//! Serving an HTTP function in Lambda: each API Gateway event converted, routed once, handed to
//! the function's handler, answered, and counted in the request's metrics.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, Function, Route, api_path, gateway_request, gateway_response};
use crate::metrics::{Metrics, names};

/// Serves an HTTP API function in Lambda: every event through [`serve_event`], with its
/// request's metrics (see [`request_metrics`]).
pub async fn run<F, Fut>(function: Function, handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Route, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    run_with_schedule(function, handler, || async {
        tracing::warn!("a scheduled event reached a function without a scheduled job");
    })
    .await
}

/// [`run`] for a function that EventBridge also invokes on a schedule: a scheduled event runs
/// `scheduled` instead.
pub async fn run_with_schedule<F, Fut, S, SFut>(
    function: Function,
    handler: F,
    scheduled: S,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Route, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
    S: Fn() -> SFut,
    SFut: Future<Output = ()>,
{
    let (handler, scheduled) = (&handler, &scheduled);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Invocation>| {
            let started = Instant::now();
            // Boxed, as lambda_http boxes its handler's future: the handlers' futures nest the
            // SDK's deeply, and unboxed their type is more than the compiler will lay out.
            let served: Pin<Box<dyn Future<Output = Answer> + '_>> = match event.payload {
                Invocation::Scheduled(event) => Box::pin(async move {
                    tracing::debug!(
                        source = event.source,
                        detail_type = event.detail_type,
                        "scheduled run"
                    );
                    scheduled().await;
                    Answer::Done {}
                }),
                Invocation::Http(event) => Box::pin(async move {
                    let served = serve_event(handler, *event).await;
                    request_metrics(function, &served, started.elapsed()).emit();
                    Answer::Http(Box::new(served.response))
                }),
            };
            async move { Ok::<_, lambda_runtime::Error>(served.await) }
        },
    ))
    .await
}

/// What invokes an HTTP function: an EventBridge schedule, or else API Gateway.
#[derive(Deserialize)]
#[serde(untagged)]
enum Invocation {
    Scheduled(Scheduled),
    Http(Box<ApiGatewayV2httpRequest>),
}

/// The fields every EventBridge scheduled event carries.
#[derive(Deserialize)]
struct Scheduled {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
}

/// What the function answers.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Http(Box<ApiGatewayV2httpResponse>),
    Done {},
}

/// What serving one event came to.
pub struct Served {
    pub response: ApiGatewayV2httpResponse,
    /// The route it was served as, as the template names it (`GET /rockets/{channel}`), or
    /// `other`.
    pub route: &'static str,
    /// The `error.code` of an error's answer.
    pub error: Option<&'static str>,
}

/// One HTTP API event: converted (an event lambda_http cannot convert is a 400 naming the
/// field), routed, handled, and turned into the answer Lambda returns.
pub async fn serve_event<F, Fut>(handler: &F, event: ApiGatewayV2httpRequest) -> Served
where
    F: Fn(Route, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let (route, outcome) = match gateway_request(event) {
        Err(error) => ("other", Err(error)),
        Ok(request) => match Route::resolve(request.method(), api_path(&request)) {
            Err(error) => ("other", Err(error)),
            Ok(route) => (route.label(), handler(route, request).await),
        },
    };
    let (response, error) = match outcome {
        Ok(response) => (response, None),
        Err(error) => {
            let code = error.code();
            (error.into_response(), Some(code))
        }
    };
    Served {
        response: gateway_response(response),
        route,
        error,
    }
}

/// Routes `request` and has `handler` serve it; an error is the answer it maps to.
pub async fn respond<F, Fut>(handler: F, request: Request) -> Response<Body>
where
    F: FnOnce(Route, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let served = match Route::resolve(request.method(), api_path(&request)) {
        Ok(route) => handler(route, request).await,
        Err(error) => Err(error),
    };
    served.unwrap_or_else(ApiError::into_response)
}

/// One request's metrics: `Requests` and `Latency` per route and status; for ingest also
/// `Accepted`, `Rejected` (per error code) and `QueueUnavailable`.
pub fn request_metrics(function: Function, served: &Served, elapsed: Duration) -> Metrics {
    let status = served.response.status_code;
    let mut metrics = Metrics::new(function.name());
    metrics
        .per_all("route", served.route)
        .per_all("status", status.to_string())
        .count(names::REQUESTS, 1)
        .millis(names::LATENCY, elapsed.as_secs_f64() * 1000.0);
    if function == Function::Ingest {
        match status {
            200..=299 => {
                metrics.count(names::ACCEPTED, 1);
            }
            503 => {
                metrics.count(names::QUEUE_UNAVAILABLE, 1);
            }
            400..=499 => {
                metrics
                    .per("code", served.error.unwrap_or("other"))
                    .count(names::REJECTED, 1);
            }
            _ => {}
        }
    }
    metrics
}
