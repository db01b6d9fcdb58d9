//! The apply function behind a Lambda Invoke endpoint, for an event source that drives it the
//! way Lambda's SQS event source mapping does: `sam local start-lambda`, or `cargo lambda
//! watch`, on loopback.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::launch::read_response;

/// Why an invocation did not answer with a batch response; the whole batch comes back.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("invoke endpoint unreachable: {0}")]
    Unreachable(#[source] std::io::Error),
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
        let head = format!(
            "POST /2015-03-31/functions/{}/invocations HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.function,
            self.address,
            body.len()
        );
        let exchange = async {
            let mut stream = TcpStream::connect(&self.address).await?;
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            read_response(&mut stream).await
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| InvokeError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
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
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    /// An invoke endpoint that answers every request with `status` and `body`, and keeps the
    /// request lines it saw.
    async fn endpoint(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
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
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
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

    #[test]
    fn only_plain_http_host_and_port_endpoints() {
        let second = Duration::from_secs(1);
        assert!(Invoker::new("http://127.0.0.1:3001", "ApplyFunction", second).is_ok());
        assert!(Invoker::new("http://127.0.0.1:3001/", "ApplyFunction", second).is_ok());
        assert!(Invoker::new("https://lambda.amazonaws.com", "f", second).is_err());
        assert!(Invoker::new("http://127.0.0.1:3001/x", "f", second).is_err());
    }
}
