//! The real `rockets-local` binary as a child process, for tests that need its own process:
//! its own open-file limit, signals, its log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `rockets-local` running as a child process, its output collected.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    output: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts the server with the open-file limit (soft and hard) at `open_files`.
    pub fn start(open_files: u32, env: &[(&str, &str)]) -> ServerProcess {
        Self::start_with(open_files, &[], env)
    }

    /// [`ServerProcess::start`] with command-line arguments.
    pub fn start_with(open_files: u32, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                &format!("ulimit -n {open_files} && exec \"$0\" \"$@\""),
            ])
            .arg(env!("CARGO_BIN_EXE_rockets-local"))
            .args(args);
        Self::spawn(command, env)
    }

    /// Starts `command`, which runs the server in the end (its last `exec`), with a test's
    /// settings and `env`.
    pub fn spawn(mut command: Command, env: &[(&str, &str)]) -> ServerProcess {
        let mut child = command
            .env("ROCKETS_ADDR", "127.0.0.1:0")
            .env("ROCKETS_DATA_DIR", ":memory:")
            .env("RUST_LOG", "info")
            .env("ROCKETS_ALLOWED_HOSTS", "x")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rockets-local starts");
        let output = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let collected = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("rockets-local listening on ") {
                    let _ = url_tx.send(url.split(' ').next().unwrap_or_default().to_string());
                }
                let mut output = collected.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        });
        let stderr = child.stderr.take().unwrap();
        let collected = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut output = collected.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no address printed: {}", output.lock().unwrap()));
        ServerProcess { child, url, output }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("an IP:PORT address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child's PID.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// The exit code, once the process has exited within `within`.
    pub fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
