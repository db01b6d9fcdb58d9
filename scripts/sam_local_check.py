"""The end-to-end check behind scripts/check-sam-local: through `sam local start-api` on
LocalStack, a shuffled, duplicated stream for several rockets converges to the in-order fold,
an invalid message gets its 400, and a message sent to the dead-letter queue (past a park
limit of 6) and redriven with StartMessageMoveTask is applied exactly once. Every process it
starts is stopped by its PID."""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(ROOT, "target", "docker")
LOCALSTACK = os.environ["ROCKETS_TEST_LOCALSTACK"]
PORT = LOCALSTACK.rsplit(":", 1)[1]
IN_CONTAINERS = f"http://host.docker.internal:{PORT}"
NAME = f"sam-local-{os.getpid()}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def message(channel, number, body):
    kind, fields = body
    return {"metadata": {"channel": channel, "messageNumber": number,
                         "messageTime": "2022-02-02T19:39:05.86337+01:00", "messageType": kind},
            "message": fields}


def flight(channel, length, rng):
    """Messages 1..length: a launch, then speed changes."""
    messages = [message(channel, 1, ("RocketLaunched", {
        "type": "Falcon-9", "launchSpeed": rng.randrange(100, 1000), "mission": "ARTEMIS"}))]
    for number in range(2, length + 1):
        kind = rng.choice(["RocketSpeedIncreased", "RocketSpeedDecreased"])
        messages.append(message(channel, number, (kind, {"by": rng.randrange(1, 500)})))
    return messages


def fold(messages):
    """The rocket's last message number and speed after `messages`, in order."""
    speed = 0
    for body in messages:
        fields = body["message"]
        speed = {"RocketLaunched": lambda: fields["launchSpeed"],
                 "RocketSpeedIncreased": lambda: speed + fields["by"],
                 "RocketSpeedDecreased": lambda: speed - fields["by"]}[
            body["metadata"]["messageType"]]()
    return len(messages), speed


def post(api, body):
    for _ in range(50):
        status, answer = http("POST", f"{api}/messages", body)
        if 200 <= status < 300:
            return
        time.sleep(0.5)
    raise SystemExit(f"POST never accepted: {status} {answer}")


def converged(api, expected, deadline):
    """Waits until every rocket shows what it should; the rockets still different."""
    waiting = dict(expected)
    while waiting and time.time() < deadline:
        for channel, (last, speed) in list(waiting.items()):
            status, rocket = http("GET", f"{api}/rockets/{channel}")
            if status == 200 and rocket["lastMessageNumber"] == last and rocket["speed"] == speed \
                    and rocket["pendingMessages"] == 0:
                del waiting[channel]
        time.sleep(0.5)
    return waiting


def start(args, log, env):
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(os.path.join(LOGS, log), "w"),
                            stderr=subprocess.STDOUT)


def wait_for(url, process, name):
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited; see target/docker/{name}.log")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not start; see target/docker/{name}.log")


def main():
    env = dict(os.environ, AWS_ENDPOINT_URL=LOCALSTACK, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", TABLE_NAME=NAME,
               QUEUE_NAME=NAME)
    bootstrap = subprocess.run([os.path.join(ROOT, "target/debug/rockets-local"), "bootstrap"],
                               env=env, check=True, capture_output=True, text=True).stdout
    resources = dict(line.split("=", 1) for line in bootstrap.split())
    # The containers reach LocalStack by another name; the queue is told by its URL's path.
    in_containers = {key: IN_CONTAINERS + urllib.parse.urlsplit(value).path
                     for key, value in resources.items() if key.endswith("URL")}
    variables = {
        "Parameters": {"AWS_ENDPOINT_URL": IN_CONTAINERS, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"},
        "IngestFunction": {"QUEUE_URL": in_containers["QUEUE_URL"]},
        "ApplyFunction": {"TABLE_NAME": NAME, "QUEUE_URL": in_containers["QUEUE_URL"],
                          "DEAD_LETTER_QUEUE_URL": in_containers["DEAD_LETTER_QUEUE_URL"],
                          "PARK_LIMIT": "6"},
        "QueryFunction": {"TABLE_NAME": NAME},
    }
    env_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(variables, env_file)
    env_file.close()
    api_port, lambda_port = free_port(), free_port()
    common = ["--skip-pull-image", "-t", "target/sam-build/template.yaml",
              "--parameter-overrides", f"Architecture=x86_64 EndpointUrl={IN_CONTAINERS}",
              "--env-vars", env_file.name, "--add-host", "host.docker.internal:host-gateway",
              "--host", "127.0.0.1", "--warm-containers", "EAGER"]
    processes = []
    try:
        began = time.time()
        # One after the other: each publishes its warm containers on ports it picks as free,
        # and two pickers at once can pick the same one.
        processes.append(start(["sam", "local", "start-api", *common, "--port", str(api_port)],
                               "start-api.log", env))
        api = f"http://127.0.0.1:{api_port}"
        wait_for(f"{api}/health", processes[0], "start-api")
        processes.append(start(["sam", "local", "start-lambda", *common, "--port", str(lambda_port)],
                               "start-lambda.log", env))
        wait_for(f"http://127.0.0.1:{lambda_port}/", processes[1], "start-lambda")
        processes.append(start(
            [os.path.join(ROOT, "target/debug/rockets-local"), "event-source",
             "--invoke", f"http://127.0.0.1:{lambda_port}", "--function", "ApplyFunction"],
            "event-source.log", dict(env, QUEUE_URL=resources["QUEUE_URL"])))
        print(f"sam local: start-api, start-lambda and the event source up in {time.time() - began:.0f} s")

        failures = 0
        with urllib.request.urlopen(f"{api}/", timeout=60) as page:
            ok = page.status == 200 and page.headers["content-type"].startswith("text/html") \
                and b"<title>Rockets</title>" in page.read()
        print(f"{'ok  ' if ok else 'FAIL'} the dashboard page from GET / (query function)")
        failures += not ok

        status, answer = http("POST", f"{api}/messages", {"metadata": {"channel": "x"}})
        ok = status == 400 and answer["error"]["field"] == "metadata.messageNumber"
        print(f"{'ok  ' if ok else 'FAIL'} an invalid message: {status} {answer}")
        failures += not ok

        rng = random.Random(7)
        expected, arrivals = {}, []
        for i in range(4):
            channel = f"{NAME}-rocket-{i}"
            messages = flight(channel, 6, rng)
            expected[channel] = fold(messages)
            arrivals += messages + rng.sample(messages, 2)
        rng.shuffle(arrivals)
        for body in arrivals:
            post(api, body)
        waiting = converged(api, expected, time.time() + 120)
        print(f"{'ok  ' if not waiting else 'FAIL'} {len(arrivals)} shuffled, duplicated messages for "
              f"{len(expected)} rockets converge to the in-order fold{'' if not waiting else f': {waiting}'}")
        failures += bool(waiting)

        # With nothing applied, a park limit of 6 admits messages 1 to 6: message 7 goes to the
        # dead-letter queue; once 1 fills the gap, a redrive applies it exactly once.
        channel = f"{NAME}-redriven"
        messages = flight(channel, 7, rng)
        for body in messages[1:]:
            post(api, body)
        sqs = boto3.client("sqs", endpoint_url=LOCALSTACK, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        dead_url = resources["DEAD_LETTER_QUEUE_URL"]
        deadline = time.time() + 60
        while time.time() < deadline:
            depth = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=[
                "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
            if depth == "1":
                break
            time.sleep(0.5)
        post(api, messages[0])
        stalled = not converged(api, {channel: fold(messages[:6])}, time.time() + 60)
        arn = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        # The apply function sent it there itself, so SQS knows no source queue to return it to:
        # the redrive names the messages queue, as docs/operations.md says.
        sqs.start_message_move_task(SourceArn=arn(dead_url),
                                    DestinationArn=arn(resources["QUEUE_URL"]))
        waiting = converged(api, {channel: fold(messages)}, time.time() + 60)
        status, history = http("GET", f"{api}/rockets/{channel}/events")
        numbers = [e["metadata"]["messageNumber"] for e in history.get("events", [])]
        ok = depth == "1" and stalled and not waiting and numbers == list(range(1, 8))
        print(f"{'ok  ' if ok else 'FAIL'} a message past the park limit goes to the dead-letter "
              f"queue and, redriven, is applied once (dead letters {depth}, history {numbers})")
        failures += not ok
        print(f"sam local: {4 - failures} passed, {failures} failed in {time.time() - began:.0f} s")
        return 1 if failures else 0
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        os.unlink(env_file.name)


if __name__ == "__main__":
    sys.exit(main())
