//! Generated hostile requests against the real `rockets-local` binary over raw TCP: methods,
//! paths, percent-encodings, header names and values with control and non-ASCII bytes, `Host`
//! and `X-Forwarded-*` variants, chunked and content-length bodies, early answers followed by
//! pipelined requests. Seeded (`ROCKETS_FUZZ_SEED`), so a failure reproduces.
//!
//! Every request must be answered or its connection closed; a kept-alive connection must
//! answer the next request correctly; no panic may reach the log; a rejected message must not
//! be stored.

mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use process::ServerProcess;
use rockets_testkit::{Rng, channel, flight};

const METHODS: [&str; 12] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "get", "POSTX", "G\u{1}T",
    "CONNECT",
];

const PATHS: [&str; 24] = [
    "/messages",
    "/messages/",
    "/rockets",
    "/rockets/",
    "/rockets/abc",
    "/rockets/abc/events",
    "/rockets/%zz",
    "/rockets/%00",
    "/rockets/%2e%2e",
    "/rockets/..",
    "/rockets/a%2Fb/events",
    "/rockets/%C3%A9",
    "/rockets/%FF",
    "/health",
    "/",
    "*",
    "//rockets",
    "/rockets?sortBy=speed&order=desc",
    "/rockets?limit=-1",
    "/rockets?limit=99999999999999999999",
    "/rockets?cursor=%00%01",
    "/rockets?status=%22x%22",
    "/rockets/abc/events?after=-5",
    "http://x/rockets",
];

const HOSTS: [&[u8]; 12] = [
    b"127.0.0.1",
    b"localhost:8088",
    b"a b",
    b"[x]",
    b"[::1]:8088",
    b"x:99999",
    b"",
    b"javascript:",
    b"x/y?z",
    b"caf\xc3\xa9",
    b"x\x01y",
    b"\xff\xfe",
];

const PROTOS: [&[u8]; 6] = [b"http", b"https", b"h ttp", b"javascript", b"", b"HTTPS"];

fn pick<'a, T: ?Sized>(rng: &mut Rng, items: &[&'a T]) -> &'a T {
    items[rng.below(items.len() as u64) as usize]
}

/// `min` to `max - 1` random bytes, printable ASCII or any.
fn random_bytes(rng: &mut Rng, min: u64, max: u64, printable: bool) -> Vec<u8> {
    let len = min + rng.below(max - min);
    (0..len)
        .map(|_| {
            if printable {
                0x21 + rng.below(94) as u8
            } else {
                rng.below(256) as u8
            }
        })
        .collect()
}

/// One generated request, and whether it carries a valid message for `channel`.
struct Generated {
    bytes: Vec<u8>,
    method: String,
    /// Its declared body length matches what is sent, so a pipelined request may follow.
    framed: bool,
    valid_message: Option<String>,
}

/// Mostly ordinary requests with one or two hostile parts, so that the hostile parts meet every
/// route and both outcomes of a message.
fn generate(rng: &mut Rng, index: usize) -> Generated {
    let post = rng.chance(50);
    let method = if rng.chance(70) {
        if post { "POST" } else { "GET" }.to_string()
    } else {
        pick(rng, &METHODS[..]).to_string()
    };
    let mut path = match rng.below(10) {
        0 => {
            let bytes = random_bytes(rng, 1, 41, true);
            format!("/{}", String::from_utf8(bytes).unwrap())
        }
        1 => {
            let bytes = random_bytes(rng, 1, 21, false);
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            format!("/rockets/{encoded}")
        }
        2 => format!("/rockets/{}", "x".repeat(rng.below(9000) as usize)),
        3 | 4 => pick(rng, &PATHS[..]).to_string(),
        _ if post => "/messages".to_string(),
        _ => pick(rng, &PATHS[2..6]).to_string(),
    };
    if rng.chance(3) {
        path.push('\u{7f}');
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !rng.chance(5) {
        head.extend_from_slice(b"Host: ");
        let host = if rng.chance(60) {
            HOSTS[0]
        } else {
            pick(rng, &HOSTS[..])
        };
        head.extend_from_slice(host);
        head.extend_from_slice(b"\r\n");
    }
    if rng.chance(25) {
        head.extend_from_slice(b"X-Forwarded-Proto: ");
        head.extend_from_slice(pick(rng, &PROTOS[..]));
        head.extend_from_slice(b"\r\n");
    }
    if rng.chance(15) {
        head.extend_from_slice(b"X-Forwarded-For: 1.2.3.4, \xc3\xa9\r\n");
    }
    for _ in 0..(if rng.chance(30) { 1 + rng.below(2) } else { 0 }) {
        let name = match rng.below(4) {
            0 => b"X-Te st".to_vec(),
            1 => b"X-\xc3\xa9".to_vec(),
            _ => random_bytes(rng, 1, 11, true),
        };
        let value = match rng.below(4) {
            0 => b"a\x01b".to_vec(),
            1 => b"\xc3\xa9t\xc3\xa9".to_vec(),
            2 => vec![b'v'; rng.below(20_000) as usize],
            _ => random_bytes(rng, 0, 30, true),
        };
        head.extend_from_slice(&name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(&value);
        head.extend_from_slice(b"\r\n");
    }
    let mut valid_message = None;
    let body: Vec<u8> = match if post { rng.below(8) } else { rng.below(12) } {
        0 => Vec::new(),
        1 | 6 | 7 => {
            let name = format!("fuzz-{index}");
            let message = flight(&channel(&name), 1, rng).remove(0).to_json();
            valid_message = Some(name);
            message.into_bytes()
        }
        2 => b"{\"metadata\":{\"channel\":\"x\"}".to_vec(),
        3 => random_bytes(rng, 0, 200, false),
        4 => b"[]".to_vec(),
        5 => b"{\"metadata\":null,\"message\":{}}".to_vec(),
        _ => Vec::new(),
    };
    let mut framed = true;
    match rng.below(12) {
        // Chunked, well formed.
        0 => {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            if !body.is_empty() {
                head.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                head.extend_from_slice(&body);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"0\r\n\r\n");
        }
        // Chunked, with a chunk size that is not one.
        1 => {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\nzz\r\n");
            head.extend_from_slice(&body);
            head.extend_from_slice(b"\r\n0\r\n\r\n");
            framed = false;
        }
        // A declared length longer than the body: the body never completes.
        2 if !body.is_empty() => {
            head.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", body.len() + 7).as_bytes(),
            );
            head.extend_from_slice(&body);
            framed = false;
            valid_message = None;
        }
        // Both framings at once, which a server must not reconcile by guessing.
        3 => {
            head.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            head.extend_from_slice(&body);
            framed = false;
            valid_message = None;
        }
        _ => {
            head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            head.extend_from_slice(&body);
        }
    }
    Generated {
        bytes: head,
        method,
        framed,
        valid_message,
    }
}

/// Reads responses from one connection, keeping what arrives past the first.
struct Reader {
    stream: TcpStream,
    buffer: Vec<u8>,
}

enum Answer {
    Response {
        status: u16,
        body: Vec<u8>,
        closes: bool,
    },
    Closed,
    Silent,
}

impl Reader {
    fn fill(&mut self, deadline: Instant) -> Option<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Some(false),
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => Some(false),
        }
    }

    fn answer(&mut self, head_only: bool, within: Duration) -> Answer {
        let deadline = Instant::now() + within;
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match self.fill(deadline) {
                Some(true) => continue,
                Some(false) if self.buffer.is_empty() => return Answer::Closed,
                Some(false) => panic!(
                    "a partial response: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
                None => return Answer::Silent,
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        assert!(head.starts_with("http/1.1 "), "{head:?}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let length = if head_only || status == 204 || status == 304 {
            0
        } else {
            length
        };
        while self.buffer.len() < head_end + length {
            match self.fill(deadline) {
                Some(true) => {}
                _ => panic!("a response body cut short: {head:?}"),
            }
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Answer::Response {
            status,
            body,
            closes: head.contains("connection: close"),
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

fn get(url_host: &str, port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect((url_host, port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = Reader {
        stream,
        buffer: Vec::new(),
    };
    match reader.answer(false, Duration::from_secs(5)) {
        Answer::Response { status, .. } => status,
        _ => panic!("GET {path} not answered"),
    }
}

#[test]
fn hostile_requests_are_answered_or_closed_never_panic_and_store_nothing() {
    let seed: u64 = std::env::var("ROCKETS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let requests: usize = std::env::var("ROCKETS_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let mut server = ServerProcess::start(
        4096,
        &[
            ("ROCKETS_BODY_TIMEOUT_MS", "300"),
            ("ROCKETS_HEADER_TIMEOUT_MS", "2000"),
            // Two of the names generated; the others are refused as a rebinding page's are.
            ("ROCKETS_ALLOWED_HOSTS", "x,127.0.0.1,localhost:8088"),
        ],
    );
    let target = server.url.trim_start_matches("http://").to_string();
    let (host, port) = target.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let mut rng = Rng::new(seed);
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for index in 0..requests {
        let request = generate(&mut rng, index);
        let pipelined = request.framed && rng.chance(50);
        let mut stream = TcpStream::connect((host, port)).unwrap();
        let mut bytes = request.bytes.clone();
        if pipelined {
            bytes.extend_from_slice(HEALTH);
        }
        // The server may close before reading everything; that is an answer too.
        let _ = stream.write_all(&bytes);
        let mut reader = Reader {
            stream,
            buffer: Vec::new(),
        };
        let context = || {
            format!(
                "seed {seed}, request {index}: {:?}",
                String::from_utf8_lossy(&request.bytes[..request.bytes.len().min(300)])
            )
        };
        let first = reader.answer(request.method == "HEAD", Duration::from_secs(5));
        let closes = match first {
            Answer::Silent => panic!("neither answered nor closed; {}", context()),
            Answer::Closed => true,
            Answer::Response { status, closes, .. } => {
                *statuses.entry(status).or_default() += 1;
                if let Some(name) = &request.valid_message {
                    if status == 202 {
                        accepted.push(name.clone());
                    } else {
                        rejected.push(name.clone());
                    }
                }
                assert!(status != 500 && status != 503, "{status}; {}", context());
                closes
            }
        };
        if closes {
            continue;
        }
        if !pipelined {
            let _ = reader.stream.write_all(HEALTH);
        }
        match reader.answer(false, Duration::from_secs(5)) {
            Answer::Response { status, body, .. } => {
                assert_eq!(
                    status,
                    200,
                    "the next request on the connection; {}",
                    context()
                );
                assert_eq!(body, br#"{"status":"ok"}"#, "{}", context());
            }
            Answer::Closed => {}
            Answer::Silent => panic!("the next request was not answered; {}", context()),
        }
    }
    eprintln!(
        "statuses: {statuses:?}; {} accepted, {} rejected messages",
        accepted.len(),
        rejected.len()
    );
    assert!(!accepted.is_empty() && !rejected.is_empty(), "{statuses:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    for name in &accepted {
        while get(host, port, &format!("/rockets/{name}")) != 200 {
            assert!(
                Instant::now() < deadline,
                "{name} was accepted but never applied"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for name in &rejected {
        assert_eq!(
            get(host, port, &format!("/rockets/{name}")),
            404,
            "{name} was rejected but stored"
        );
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(Duration::from_secs(20)), Some(0));
    let log = server.output();
    assert!(!log.contains("panicked"), "{log}");
}
