//! The apply function behind a Lambda Invoke endpoint, for an event source that drives it the
//! way Lambda's SQS event source mapping does: `sam local start-lambda`, or `cargo lambda
//! watch`, on loopback.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why an invocation did not answer with a batch response; the whole batch comes back.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("invoke endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("invoke answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the function failed: {0}")]
    Function(String),
}

/// `POST /2015-03-31/functions/{function}/invocations` at `host:port`.
#[derive(Clone, Debug)]
pub struct Invoker {
    address: String,
    function: String,
    timeout: Duration,
}

impl Invoker {
    /// `endpoint` is `http://host:port` (a trailing slash is ignored).
    pub fn new(endpoint: &str, function: &str, timeout: Duration) -> Result<Self, String> {
        let address = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| format!("{endpoint}: only http:// endpoints are supported"))?
            .trim_end_matches('/');
        if address.is_empty() || address.contains('/') {
            return Err(format!("{endpoint}: expected http://host:port"));
        }
        Ok(Invoker {
            address: address.to_string(),
            function: function.to_string(),
            timeout,
        })
    }

    /// Invokes the function with `records` as one SQS event; its `batchItemFailures`.
    pub async fn invoke(&self, records: &[SqsMessage]) -> Result<SqsBatchResponse, InvokeError> {
        let mut event = SqsEvent::default();
        event.records = records.to_vec();
        let body = serde_json::to_vec(&event).expect("an SQS event serialises");
        let request = hyper::Request::post(format!(
            "/2015-03-31/functions/{}/invocations",
            self.function
        ))
        .header(hyper::header::HOST, &self.address)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| InvokeError::Unreachable(e.to_string()))?;
        let exchange = async {
            let stream = TcpStream::connect(&self.address)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| InvokeError::Unreachable("no answer in time".into()))?
            .map_err(InvokeError::Unreachable)?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err(InvokeError::Status { status, body: text });
        }
        // A function error is a 200 whose body names it, as Lambda's Invoke API answers.
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| InvokeError::Function(text.clone()))?;
        if value.get("errorMessage").is_some() || value.get("errorType").is_some() {
            return Err(InvokeError::Function(text));
        }
        serde_json::from_value(value).map_err(|_| InvokeError::Function(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// An invoke endpoint that answers one request with `status` and `body`, and keeps the
    /// request line it saw.
    async fn endpoint(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        answering(answer).await
    }

    /// An invoke endpoint that answers one request with `answer`, as it is, and then closes the
    /// connection; it keeps the request line it saw.
    async fn answering(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(answer.as_bytes()).await.unwrap();
            drop(stream);
            String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap()
                .to_string()
        });
        (format!("http://{addr}"), served)
    }

    fn invoker(endpoint: &str) -> Invoker {
        Invoker::new(endpoint, "ApplyFunction", Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn a_batch_response_is_read_and_a_function_error_fails_the_batch() {
        let (url, served) =
            endpoint(200, r#"{"batchItemFailures":[{"itemIdentifier":"m-2"}]}"#).await;
        let response = invoker(&url).invoke(&[]).await.unwrap();
        assert_eq!(response.batch_item_failures[0].item_identifier, "m-2");
        assert_eq!(
            served.await.unwrap(),
            "POST /2015-03-31/functions/ApplyFunction/invocations HTTP/1.1"
        );

        let (url, _) = endpoint(200, r#"{"errorType":"ApplyError","errorMessage":"no id"}"#).await;
        let error = invoker(&url).invoke(&[]).await.unwrap_err();
        assert!(matches!(error, InvokeError::Function(_)), "{error}");

        let (url, _) = endpoint(404, "no such function").await;
        let error = invoker(&url).invoke(&[]).await.unwrap_err();
        assert!(
            matches!(error, InvokeError::Status { status: 404, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_answers_are_read_whole() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"c"}]}"#;
        let (first, second) = body.split_at(15);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        );
        let (url, _) = answering(chunked).await;
        let response = invoker(&url).invoke(&[]).await.unwrap();
        assert_eq!(response.batch_item_failures[0].item_identifier, "c");

        let closed = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\
                      {\"batchItemFailures\":[{\"itemIdentifier\":\"d\"}]}";
        let (url, _) = answering(closed.to_string()).await;
        let response = invoker(&url).invoke(&[]).await.unwrap();
        assert_eq!(response.batch_item_failures[0].item_identifier, "d");
    }

    #[test]
    fn only_plain_http_host_and_port_endpoints() {
        let second = Duration::from_secs(1);
        assert!(Invoker::new("http://127.0.0.1:3001", "ApplyFunction", second).is_ok());
        assert!(Invoker::new("http://127.0.0.1:3001/", "ApplyFunction", second).is_ok());
        assert!(Invoker::new("https://lambda.amazonaws.com", "f", second).is_err());
        assert!(Invoker::new("http://127.0.0.1:3001/x", "f", second).is_err());
    }
}
