//! The real `rockets-local` binary, started as a child process with an open-file limit of
//! 1,024, against the `rockets launch` client, which behaves like the challenge's test program:
//! a new connection per message, never closed. Also its handling of SIGTERM.

mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use process::ServerProcess;

use rockets_tools::launch::{LaunchOptions, Plan, Target, launch, read_response, verify};

#[test]
fn the_challenge_program_way_of_connecting_is_served_to_the_end_with_1024_open_files() {
    let mut server = ServerProcess::start(1024, &[("ROCKETS_REPORT_MS", "1000")]);
    let (messages, rockets, seed) = (20_000, 20, 444);
    // The client holds thousands of connections open, as the challenge's program does.
    raise_open_files();
    let target = Target::parse(&format!("{}/messages", server.url)).unwrap();
    let options = LaunchOptions {
        url: target.clone(),
        concurrency: 3,
        max_messages: messages,
        rockets,
        seed,
        ..LaunchOptions::default()
    };
    let plan = Plan::generate(seed, messages, rockets, options.duplicate_percent);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(300), launch(options, &plan)).await
        })
        .expect("the launch finishes within five minutes")
        .expect("the launch runs");
    eprintln!(
        "rockets launch: {} sends, {} accepted",
        report.sends,
        report.accepted_count()
    );
    assert_eq!(report.sends, messages, "{} retries", report.retries());
    assert_eq!(
        report.accepted_count(),
        messages,
        "every message answered 2xx"
    );
    assert_eq!(report.dropped, 0, "{} retries", report.retries());
    assert!(
        report.peak_held > 500,
        "the client held its connections open: {}",
        report.peak_held
    );

    let expected = plan.expected(&vec![true; plan.sends.len()]);
    runtime
        .block_on(verify(&target, &expected, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));

    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(Duration::from_secs(20)), Some(0));
    let log = server.output();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(log.contains("activity in the last"), "{log}");
    assert!(
        log.lines().count() < 200,
        "a summary every second, not a line per batch: {} lines",
        log.lines().count()
    );
}

/// The slow-body flood: 1,200 connections that send their headers, then a body byte every five
/// seconds (and reconnect when closed), against the server at an open-file limit of 1,024,
/// while other clients post ten times a second on connections they keep, giving up on an
/// answer after two seconds. The body rate floor closes each slow body within about a second,
/// so at least 99% of the other requests are answered (without it, the flood holds most of the
/// connections for 30 s each, and the others' idle connections are closed to make room).
#[test]
fn a_slow_body_flood_cannot_starve_other_clients() {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let server = ServerProcess::start(1024, &[]);
    raise_open_files();
    let addr = server.addr();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let slow = |stop: std::sync::Arc<AtomicBool>| {
        move || {
            let open = || -> Option<std::net::TcpStream> {
                let mut stream = std::net::TcpStream::connect(addr).ok()?;
                let head = "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n{";
                stream.write_all(head.as_bytes()).ok()?;
                Some(stream)
            };
            let mut streams: Vec<Option<std::net::TcpStream>> = (0..100).map(|_| open()).collect();
            while !stop.load(Relaxed) {
                for stream in streams.iter_mut() {
                    let alive = stream.as_mut().is_some_and(|s| s.write_all(b" ").is_ok());
                    if !alive {
                        *stream = open();
                    }
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    let attackers: Vec<_> = (0..12)
        .map(|_| std::thread::spawn(slow(stop.clone())))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (answered, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let message = Plan::generate(3, 10, 1, 0).flights[0][0].to_json();
    let request = format!(
        "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{message}",
        message.len()
    );
    // Clients that keep their connection between requests and do not retry: a connection
    // closed under them is a failed request.
    let ask =
        |stream: &mut Option<std::io::BufReader<std::net::TcpStream>>| -> std::io::Result<bool> {
            use std::io::BufRead as _;
            if stream.is_none() {
                let timeout = Duration::from_secs(2);
                let connected = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                connected.set_read_timeout(Some(timeout))?;
                *stream = Some(std::io::BufReader::new(connected));
            }
            let reader = stream.as_mut().expect("connected");
            reader.get_mut().write_all(request.as_bytes())?;
            let (mut status, mut line, mut length) = (String::new(), String::new(), 0);
            reader.read_line(&mut status)?;
            while reader.read_line(&mut line)? > 2 {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            Ok(status.starts_with("HTTP/1.1 202"))
        };
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let mut stream = None;
                let until = std::time::Instant::now() + Duration::from_secs(12);
                while std::time::Instant::now() < until {
                    match ask(&mut stream) {
                        Ok(true) => answered.fetch_add(1, Relaxed),
                        _ => {
                            stream = None;
                            failed.fetch_add(1, Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    stop.store(true, Relaxed);
    let (answered, failed) = (answered.into_inner(), failed.into_inner());
    eprintln!("during the flood: {answered} answered, {failed} failed");
    assert!(answered > 100, "{answered} answered");
    assert!(
        failed * 100 <= answered + failed,
        "{failed} of {} failed",
        answered + failed
    );
    for attacker in attackers {
        attacker.join().unwrap();
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = ServerProcess::start(1024, &[]);
    let target = Target::parse(&server.url).unwrap();
    // A request whose body never finishes keeps the graceful stop waiting.
    let mut stream = std::net::TcpStream::connect((target.host.as_str(), target.port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.exit_code(Duration::from_millis(500)),
        None,
        "still finishing"
    );
    server.signal(libc::SIGINT);
    assert_eq!(server.exit_code(Duration::from_secs(5)), Some(130));
}

#[test]
fn empty_endpoint_variables_mean_unset_as_sam_local_passes_them() {
    // Nothing listens on this port: every AWS call fails, which must not be a panic.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut server = ServerProcess::start_with(
        1024,
        &["--aws"],
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_SQS", ""),
            ("AWS_ENDPOINT_URL_DYNAMODB", ""),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("TABLE_NAME", "rockets"),
            (
                "QUEUE_URL",
                &format!("{endpoint}/000000000000/rockets.fifo"),
            ),
        ],
    );
    let target = Target::parse(&server.url).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let addrs = target.resolve().await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /rockets/x HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        read_response(&mut stream).await.unwrap().0
    });
    assert_eq!(status, 503, "the store is unreachable, and says so");
    // The event source's receives fail too, once the SDK has spent its retries.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.output().contains("receive failed") {
        assert!(Instant::now() < deadline, "{}", server.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(Duration::from_secs(20)), Some(0));
    let log = server.output();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_readme_commands_for_aws_mode_work_against_an_emulator() {
    let Some(moto) = rockets_testkit::emulator("ROCKETS_TEST_MOTO") else {
        return;
    };
    // Exactly the README's environment: the default names, `rockets` and `rockets.fifo`.
    let name = "rockets";
    let env = [
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    // `rockets-local bootstrap`
    let output = Command::new(env!("CARGO_BIN_EXE_rockets-local"))
        .arg("bootstrap")
        .envs(env)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains(&format!("TABLE_NAME={name}\n")),
        "{printed}"
    );
    assert!(printed.contains(&format!("{name}.fifo")), "{printed}");

    // `rockets-local --aws --bootstrap`, with nothing but the names to go on.
    let mut server = ServerProcess::start_with(1024, &["--aws", "--bootstrap"], &env);
    let target = Target::parse(&server.url).unwrap();
    let plan = Plan::generate(9, 30, 2, 0);
    let message = plan.flights[0][0].to_json();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let addrs = target.resolve().await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        let post = format!(
            "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{message}",
            message.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, post.as_bytes())
            .await
            .unwrap();
        let (status, body) = read_response(&mut stream).await.unwrap();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    });
    let mut accepted = vec![false; plan.sends.len()];
    let first = plan
        .sends
        .iter()
        .position(|&(f, m)| (f, m) == (0, 0))
        .unwrap();
    accepted[first] = true;
    let expected: Vec<_> = plan.expected(&accepted).into_iter().take(1).collect();
    runtime
        .block_on(verify(&target, &expected, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.exit_code(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.output()
    );
}

/// `rockets-local parked list|purge CHANNEL` on a data directory no server holds.
#[test]
fn the_parked_command_lists_and_purges_a_channels_parked_messages() {
    use rockets::ports::ChannelStore as _;
    let dir = std::env::temp_dir().join(rockets_testkit::unique_name("parked-cli"));
    let c = rockets_testkit::channel("junk");
    let messages = rockets_testkit::flight(&c, 5, &mut rockets_testkit::Rng::new(4));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let data = rockets_embedded::DataDir::open(&dir).unwrap();
        let store = rockets_embedded::DurableStore::open(&data).unwrap();
        let mut timeline = rockets::ordering::Timeline::empty(c.clone(), chrono::Utc::now());
        for message in &messages[2..] {
            timeline.receive(message.clone());
        }
        store
            .commit(0, &timeline.into_change().unwrap())
            .await
            .unwrap();
    });
    let run = |action: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_rockets-local"))
            .args(["parked", action, "junk", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let listed = run("list");
    let numbers: Vec<_> = (listed["parked"].as_array().unwrap().iter())
        .map(|p| p["messageNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4, 5]);
    assert_eq!(run("purge"), serde_json::json!({"purged": 3}));
    assert_eq!(run("list"), serde_json::json!({"parked": []}));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lifts this process's soft open-file limit to its hard one.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into, and setrlimit reads, one valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
