//! `rockets-local`: the pipeline on 127.0.0.1:8088 with embedded backends.

use std::process::ExitCode;

use rockets_local::{LocalConfig, start_embedded};

const USAGE: &str = "\
usage: rockets-local [--addr HOST:PORT]

Serves POST /messages, GET /rockets, GET /rockets/{channel}, GET /rockets/{channel}/events and
GET /health, and applies messages in process, on embedded backends.

environment:
  ROCKETS_ADDR                   listen address (default 127.0.0.1:8088)
  ROCKETS_POLLERS                concurrent apply pollers (default 4)
  ROCKETS_BATCH_SIZE             records per apply batch, 1-10 (default 10)
  ROCKETS_VISIBILITY_TIMEOUT_MS  before a failed record is redelivered (default 30000)
  ROCKETS_MAX_RECEIVE_COUNT      receives before the dead-letter queue (default 5)
  RUST_LOG                       log level (default info)";

#[tokio::main]
async fn main() -> ExitCode {
    rockets::telemetry::init();
    let mut config = match LocalConfig::from_env() {
        Ok(config) => config,
        Err(error) => return fail(&error.to_string()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(addr)) => match addr.parse() {
                Ok(addr) => config.addr = addr,
                Err(error) => return fail(&format!("--addr {addr}: {error}")),
            },
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => return fail(&format!("unexpected argument {arg}")),
        }
    }
    match start_embedded(&config).await {
        Ok(server) => {
            println!("rockets-local listening on http://{}", server.addr());
            server.wait().await;
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("cannot listen on {}: {error}", config.addr)),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rockets-local: {message}\n\n{USAGE}");
    ExitCode::from(2)
}
