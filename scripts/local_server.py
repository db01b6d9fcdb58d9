"""The real rockets-local binary on a free loopback port, in memory, for the Python checks
(check-api, check-dashboard): started, waited for, and stopped by its PID."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("ROCKETS_LOCAL_BIN", os.path.join(ROOT, "target/debug/rockets-local"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, timeout=10):
    """(status, headers, body bytes) of a GET, or of a JSON POST when `body` is given."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"content-type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def get_json(url):
    status, _, body = request(url)
    if status != 200:
        raise AssertionError(f"GET {url}: {status} {body[:300]!r}")
    return json.loads(body)


class LocalServer:
    """`with LocalServer() as server:` runs rockets-local at `server.base` until the block ends."""

    def __init__(self, **env):
        self.env = env
        self.process = None
        self.base = None

    def __enter__(self):
        if not os.access(BINARY, os.X_OK):
            sys.exit(f"{BINARY} is missing: build it with `cargo test --workspace --no-run`")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, ROCKETS_ADDR=f"127.0.0.1:{port}", ROCKETS_DATA_DIR=":memory:",
                   RUST_LOG="warn", **self.env)
        self.process = subprocess.Popen([BINARY], env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"rockets-local exited with status {self.process.returncode}")
            try:
                if request(f"{self.base}/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit("rockets-local did not answer /health within 30 s")

    def running(self):
        return self.process.poll() is None

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *_):
        self.stop()
