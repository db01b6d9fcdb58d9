//! The HTTP front against clients that misbehave: slow headers, idle keep-alive connections,
//! more connections than the cap, bodies answered before they are read, broken chunking; and
//! what a browser needs from it: CORS, the dashboard page and the API document.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rockets_local::front::FrontConfig;
use rockets_local::{Listen, LocalServer};
use rockets_testkit::{Rng, channel, flight};
use rockets_tools::launch::read_response;
use support::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(front: FrontConfig) -> LocalServer {
    TestApp::new().front(front).spawn().await
}

async fn request(stream: &mut TcpStream, raw: &str) -> (u16, String) {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), read_response(stream))
        .await
        .expect("answered in time")
        .expect("answered");
    (status, String::from_utf8(body).unwrap())
}

async fn health(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    request(&mut stream, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .0
}

/// True once the server has closed `stream` (end of file or reset), within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_while_others_are_served() {
    let server = start(FrontConfig {
        header_read_timeout: Duration::from_millis(500),
        ..FrontConfig::default()
    })
    .await;
    let addr = server.addr();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let trickle = async {
        for _ in 0..10 {
            for stream in &mut slow {
                let _ = stream.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let served = async {
        for _ in 0..20 {
            assert_eq!(health(addr).await, 200);
        }
    };
    tokio::join!(trickle, served);
    for stream in &mut slow {
        assert!(
            closed_within(stream, Duration::from_secs(2)).await,
            "a slow-header connection is still open"
        );
    }
    assert_eq!(health(addr).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(FrontConfig {
        idle_timeout: Duration::from_millis(300),
        ..FrontConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let raw = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(request(&mut stream, raw).await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(request(&mut stream, raw).await.0, 200, "still kept alive");
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_longest_idle_connections_make_room() {
    let server = start(FrontConfig {
        max_connections: Some(8),
        idle_timeout: Duration::from_secs(60),
        ..FrontConfig::default()
    })
    .await;
    let addr = server.addr();
    let raw = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    // The challenge's program: a connection per request, never closed by the client.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(request(&mut stream, raw).await.0, 200);
        held.push(stream);
    }
    let stats = &server.front().stats;
    assert!(stats.peak_open.load(std::sync::atomic::Ordering::Relaxed) <= 8);
    let mut closed = 0;
    for stream in &mut held[..40] {
        closed += usize::from(closed_within(stream, Duration::from_millis(200)).await);
    }
    assert!(closed >= 40, "only {closed} of the oldest 40 were closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_before_the_body_is_read_closes_the_connection() {
    let server = start(FrontConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let body = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = format!(
        "PUT /messages HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the body was not served as a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400_naming_the_body() {
    let server = start(FrontConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let raw = "POST /messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let (status, body) = request(&mut stream, raw).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed_body"), "{body}");
    let queue = &server.embedded_queue.as_ref().unwrap();
    assert_eq!(queue.depth().visible + queue.depth().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_a_408() {
    let server = start(FrontConfig {
        body_read_timeout: Duration::from_millis(300),
        ..FrontConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let raw = "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"meta";
    let (status, body) = request(&mut stream, raw).await;
    assert_eq!(status, 408, "{body}");
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_is_served_on_both_loopback_addresses_and_no_other() {
    let server = TestApp::new().listen(Listen::Loopback(0)).spawn().await;
    let addrs = server.addrs().to_vec();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    assert!(addrs.iter().any(SocketAddr::is_ipv4));
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    assert_eq!(addrs.len(), if ipv6 { 2 } else { 1 }, "{addrs:?}");
    for addr in addrs {
        assert_eq!(health(addr).await, 200, "{addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_flight_and_then_stops() {
    let mut server = start(FrontConfig::default()).await;
    let addr = server.addr();
    let message = flight(&channel("shutdown-1"), 1, &mut Rng::new(3))
        .remove(0)
        .to_json();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (head, tail) = message.split_at(10);
    let raw = format!(
        "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{head}",
        message.len()
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(async move {
        let clean = server.shutdown().await;
        (clean, server)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)).await,
        "idle closed at once"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = request(&mut stream, tail).await;
    assert_eq!(status, 202, "the request in flight is answered");
    let (clean, _server) = stopping.await.unwrap();
    assert!(clean);
}

/// The whole answer to one request on a connection the client closes after it, head included.
async fn whole_answer(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8(answer).unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_origin_the_developer_names_gets_the_cors_answers_the_template_configures() {
    let server = TestApp::new()
        .cors(rockets_local::cors::Cors::AnyOrigin)
        .spawn()
        .await;
    let preflight = whole_answer(
        server.addr(),
        "OPTIONS /messages HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(preflight.starts_with("http/1.1 204"), "{preflight}");
    for line in [
        "access-control-allow-origin: *",
        "access-control-allow-methods: get,post,options",
        "access-control-allow-headers: content-type,authorization",
        "access-control-max-age: 600",
    ] {
        assert!(preflight.contains(line), "{line} in {preflight}");
    }
    let read = whole_answer(
        server.addr(),
        "GET /rockets HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(read.starts_with("http/1.1 200"), "{read}");
    assert!(read.contains("access-control-allow-origin: *"), "{read}");
    assert!(
        read.contains("access-control-expose-headers: retry-after"),
        "{read}"
    );
    // Without an Origin (not a browser), no CORS headers.
    let plain = whole_answer(
        server.addr(),
        "GET /rockets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.contains("access-control"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_api_document_are_served() {
    let server = start(FrontConfig::default()).await;
    let page = whole_answer(
        server.addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html; charset=utf-8"));
    assert!(page.contains("content-security-policy: default-src 'none'"));
    assert!(page.contains("<title>rockets</title>"));
    // Nothing is loaded from anywhere but the API itself.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    let document = whole_answer(
        server.addr(),
        "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(document.starts_with("http/1.1 200"), "{document}");
    assert!(document.contains("content-type: application/yaml"));
    assert!(document.contains("openapi: 3.1.0"));
}

/// What a page on another site can do to `rockets-local` with a browser's requests: nothing.
/// Its `text/plain` POST (no preflight), its reads of the dead letters, its redrive and a
/// rebinding name in `Host` are refused with a 403 naming the header, and change nothing;
/// the server's own page, and clients that are not browsers, go on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_site_cannot_write_read_dead_letters_or_redrive() {
    let server = TestApp::new().spawn().await;
    let addr = server.addr();
    let own = format!("localhost:{}", addr.port());
    let message = rockets_testkit::flight(
        &rockets_testkit::channel("target"),
        1,
        &mut rockets_testkit::Rng::new(1),
    )
    .remove(0)
    .to_json();
    let attack = |method: &str, path: &str, host: &str, extra: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let cross = "Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n";
    let navigation = "Sec-Fetch-Site: cross-site\r\n";
    for (raw, field) in [
        (attack("POST", "/messages", &own, cross, &message), "Origin"),
        (
            attack("GET", "/local/dead-letters", &own, cross, ""),
            "Origin",
        ),
        (
            attack("GET", "/local/dead-letters", &own, navigation, ""),
            "Sec-Fetch-Site",
        ),
        (
            attack("POST", "/local/dead-letters/redrive", &own, cross, ""),
            "Origin",
        ),
        (
            attack("DELETE", "/local/rockets/target/parked", &own, cross, ""),
            "Origin",
        ),
        // DNS rebinding: the attacker's name, resolved to 127.0.0.1.
        (
            attack(
                "POST",
                "/messages",
                &format!("evil.example:{}", addr.port()),
                "",
                &message,
            ),
            "Host",
        ),
        (
            attack("GET", "/local/dead-letters", "evil.example", "", ""),
            "Host",
        ),
    ] {
        let answer = whole_answer(addr, &raw).await;
        assert!(answer.starts_with("http/1.1 403"), "{raw}\n{answer}");
        assert!(
            answer.contains(&format!("\"field\":\"{}\"", field.to_ascii_lowercase())),
            "{answer}"
        );
        assert!(!answer.contains("access-control-allow-origin"), "{answer}");
    }
    // A preflight from there gets no permission either.
    let preflight = whole_answer(
        addr,
        &format!(
            "OPTIONS /messages HTTP/1.1\r\nHost: {own}\r\nOrigin: https://evil.example\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(
        !preflight.contains("access-control-allow-origin"),
        "{preflight}"
    );
    let queue = server.embedded_queue.as_ref().unwrap();
    assert_eq!(
        queue.depth(),
        rockets_embedded::QueueDepth::default(),
        "nothing was queued"
    );
    // The server's own page, and a client that is no browser.
    let same = "Origin: http://localhost:PORT\r\nSec-Fetch-Site: same-origin\r\n"
        .replace("PORT", &addr.port().to_string());
    let answer = whole_answer(addr, &attack("POST", "/messages", &own, &same, &message)).await;
    assert!(answer.starts_with("http/1.1 202"), "{answer}");
    let answer = whole_answer(addr, &attack("GET", "/local/dead-letters", &own, "", "")).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
}
