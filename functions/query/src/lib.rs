//! `GET /rockets`, `GET /rockets/{channel}`, `GET /rockets/{channel}/events`, `GET /health`,
//! and the two documents the API serves about itself: the dashboard page at `GET /` and the
//! OpenAPI description at `GET /openapi.yaml`. On a schedule, it also counts the rockets stalled
//! behind a gap ([`stalls`]) and reports them as metrics, which an alarm watches.

use chrono::{DateTime, Utc};
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use rockets::http::{ApiError, Route, api_path, json_response};
use rockets::listing::{DEFAULT_LIMIT, ListQuery, MAX_LIMIT, SortKey, parse_limit};
use rockets::message::{Channel, ValidationError};
use rockets::message::{Envelope, MessageNumber};
use rockets::ports::RocketReader;
use rockets::rocket::Rocket;
use rockets::story::AsOf;
use serde::Serialize;
use serde_json::json;

/// The most a response body may hold. Lambda refuses a response over 6 MB, and the body is
/// escaped once more into the response document, which at worst doubles it; API Gateway
/// passes what Lambda returns. A page is cut short of this, whatever was stored.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The dashboard: one self-contained page that reads the API it is served by.
pub const DASHBOARD_HTML: &str = include_str!("../static/index.html");
/// The API's OpenAPI 3.1 description.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");

/// The page loads nothing but itself and calls only APIs: inline script and style, no frames,
/// no forms posted elsewhere. `connect-src` is open because the page may be pointed at another
/// deployment of the API (`?api=`), which answers CORS.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src *; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /rockets`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RocketList {
    rockets: Vec<Rocket>,
    next_cursor: Option<String>,
    /// The store's totals, where it counts them in the same read.
    #[serde(skip_serializing_if = "Option::is_none")]
    totals: Option<rockets::listing::Totals>,
}

/// `GET /rockets/{channel}/events`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct History {
    channel: Channel,
    events: Vec<Envelope>,
    next_after: Option<MessageNumber>,
}

/// Serves a request routed to this function.
pub async fn handle<R: RocketReader>(
    reader: &R,
    route: Route,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let params = request.query_string_parameters();
    let param = |name: &str| params.first(name);
    match route {
        Route::Health if let Some(reason) = reader.refusing_writes() => Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": reason}),
        )),
        Route::Health if param("deep") == Some("true") => {
            // One read of a rocket that need not exist: enough to know the store answers.
            let probe = Channel::parse("health").expect("a valid channel");
            reader.rocket(&probe).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ok", "store": "ok"}),
            ))
        }
        Route::Health => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Dashboard => Ok(document(
            "text/html; charset=utf-8",
            DASHBOARD_HTML,
            Some(DASHBOARD_CSP),
        )),
        Route::ApiDocument => Ok(document("application/yaml", OPENAPI_YAML, None)),
        Route::ListRockets => list(reader, ListQuery::from_params(param)?).await,
        Route::GetRocket(channel) => rocket(reader, channel, param("asOf")).await,
        Route::GetHistory(channel) => {
            history(reader, channel, param("after"), param("limit")).await
        }
        Route::PostMessage => Err(ApiError::NotFound(format!(
            "no route for {}",
            api_path(&request)
        ))),
    }
}

/// `GET /rockets`: a page, cut to the response budget if it must be.
async fn list<R: RocketReader>(reader: &R, query: ListQuery) -> Result<Response<Body>, ApiError> {
    let mut page = reader.rockets(&query).await?;
    if within_budget(&mut page.rockets) {
        let last = page.rockets.last().expect("a cut page keeps one rocket");
        page.next = Some(query.sort_by.position(last));
    }
    let list = RocketList {
        next_cursor: page.next.map(|position| query.cursor(&position)),
        rockets: page.rockets,
        totals: page.totals,
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// `GET /rockets/{channel}`, now or as of message `as_of`.
async fn rocket<R: RocketReader>(
    reader: &R,
    channel: Channel,
    as_of: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let Some(raw) = as_of else {
        let rocket = reader.rocket(&channel).await?;
        let rocket = rocket.ok_or_else(|| not_found(&channel))?;
        return Ok(json_response(StatusCode::OK, &rocket));
    };
    let n =
        (raw.parse::<u64>().ok().filter(|n| *n >= 1)).ok_or_else(|| ValidationError::Invalid {
            field: "asOf",
            reason: "must be a whole number from 1 up".into(),
        })?;
    match rockets::story::state_as_of(reader, &channel, n).await? {
        AsOf::State(rocket) => Ok(json_response(StatusCode::OK, &rocket)),
        AsOf::NotApplied => Err(ApiError::NotFound(format!(
            "no rocket on channel {channel} with {n} messages applied"
        ))),
        AsOf::Forgotten(k) => Err(ApiError::NotFound(format!(
            "the history of channel {channel} no longer holds message {k} (it is kept for the \
             stack's HistoryRetentionDays), so the state as of message {n} cannot be folded"
        ))),
    }
}

/// `GET /rockets/{channel}/events`: applied messages after `after`, a page at a time.
async fn history<R: RocketReader>(
    reader: &R,
    channel: Channel,
    after: Option<&str>,
    limit: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let after = match after {
        None => 0,
        Some(raw) => raw.parse::<u64>().map_err(|_| ValidationError::Invalid {
            field: "after",
            reason: "must be a non-negative integer".into(),
        })?,
    };
    let limit = limit.map_or(Ok(DEFAULT_LIMIT), |raw| {
        parse_limit(raw, "limit", MAX_LIMIT)
    })?;
    let mut events =
        (reader.history(&channel, after, limit).await?).ok_or_else(|| not_found(&channel))?;
    let cut = within_budget(&mut events);
    let next_after = (cut || events.len() == limit)
        .then(|| events.last().map(|m| m.number))
        .flatten();
    let history = History {
        channel,
        events,
        next_after,
    };
    Ok(json_response(StatusCode::OK, &history))
}

fn document(content_type: &str, text: &'static str, policy: Option<&str>) -> Response<Body> {
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(policy) = policy {
        response = response.header(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
        .body(Body::Text(text.to_string()))
        .expect("static response parts are valid")
}

/// Keeps the longest prefix of `items` whose JSON fits [`MAX_BODY_BYTES`] (at least one item,
/// which alone is far smaller); true if it cut any.
fn within_budget<T: Serialize>(items: &mut Vec<T>) -> bool {
    /// Counts what serialising writes, without keeping it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut total = Counter(0);
    let keep = items
        .iter()
        .position(|item| {
            let _ = serde_json::to_writer(&mut total, item);
            total.0 += 1;
            total.0 > MAX_BODY_BYTES
        })
        .map(|first_over| first_over.max(1));
    match keep {
        Some(keep) if keep < items.len() => {
            items.truncate(keep);
            true
        }
        _ => false,
    }
}

fn not_found(channel: &Channel) -> ApiError {
    ApiError::NotFound(format!("no rocket has been seen on channel {channel}"))
}

/// What the stall check found: the rockets with messages waiting behind a gap, and how long
/// the longest-stalled of them has waited.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stalls {
    pub stalled_rockets: usize,
    pub oldest_stall_seconds: u64,
}

/// Walks the stalled rockets, the `stalled=true` listing a thousand at a time.
pub async fn stalls<R: RocketReader>(
    reader: &R,
    now: DateTime<Utc>,
) -> Result<Stalls, rockets::ports::StoreError> {
    let mut query = ListQuery {
        sort_by: SortKey::PendingMessages,
        stalled: true,
        limit: MAX_LIMIT,
        ..ListQuery::default()
    };
    let mut found = Stalls::default();
    loop {
        let page = reader.rockets(&query).await?;
        found.stalled_rockets += page.rockets.len();
        for rocket in &page.rockets {
            let since = rocket.stalled_since.unwrap_or(rocket.updated_at);
            let waited = u64::try_from((now - since).num_seconds()).unwrap_or(0);
            found.oldest_stall_seconds = found.oldest_stall_seconds.max(waited);
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(found),
        }
    }
}

/// The stall check's metrics, `StalledRockets` and `OldestStallAge` (seconds), reported every
/// time, zero included, so that an alarm on them also sees the stall end.
pub fn stall_metrics(stalls: &Stalls) -> rockets::metrics::Metrics {
    use rockets::metrics::{Metrics, names};
    let mut metrics = Metrics::new("query");
    metrics
        .count(names::STALLED_ROCKETS, stalls.stalled_rockets)
        .seconds(names::OLDEST_STALL_AGE, stalls.oldest_stall_seconds as f64);
    metrics
}

/// The scheduled stall check: counts the stalled rockets and reports them as metrics.
pub async fn check_stalls<R: RocketReader>(reader: &R) {
    match stalls(reader, Utc::now()).await {
        Ok(found) => {
            if found.stalled_rockets > 0 {
                tracing::warn!(
                    stalled_rockets = found.stalled_rockets,
                    oldest_stall_seconds = found.oldest_stall_seconds,
                    "rockets wait behind a gap: GET /rockets?stalled=true lists them"
                );
            }
            stall_metrics(&found).emit();
        }
        Err(error) => tracing::error!(%error, "the stall check could not read the listing"),
    }
}
