"""The `remote` and `judge` verifiers against small HTTP servers started here on 127.0.0.1: rewards
as served, and a server that times out, answers 500 or returns malformed JSON costs only the
samples of that request; retries, bounded concurrency, the API key kept out of every record."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_cli import grpo, read_jsonl

from grpo_cli.config import VerifierConfig
from grpo_cli.pipeline.scoring import opened_verifiers, score
from grpo_cli.plugins import load_verifier


class FakeServer:
    """A reward server and a fake judge in one, answering by rule:

    /get_reward (grpo format): reward 1.0 when the completion equals the answer, else 0.0; a
        request holding a completion with SLOW sleeps 1 s, ERR answers 500, BAD answers malformed JSON.
    /openrlhf: {"query": [...], "labels": [...]} -> reward 1.0 when the label ends the query.
    /flaky: 503 on the first attempt of each request, then as /get_reward.
    /v1/chat/completions: CORRECT when the last number of the student's response is the reference
        answer; RAMBLE in the response gets a reply with no verdict line; 401 without the key.
    """

    def __init__(self, key: str = "") -> None:
        self.key, self.lock = key, threading.Lock()
        self.in_flight = self.max_in_flight = self.requests = 0
        self.seen: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload = server.answer(self.path, body, self.headers.get("Authorization", ""))
                finally:
                    with server.lock:
                        server.in_flight -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow answer
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict, auth: str) -> tuple[int, object]:
        if path == "/v1/chat/completions":
            return self.judge(body, auth)
        if path == "/openrlhf":
            rewards = [1.0 if q.endswith(str(label)) else 0.0 for q, label in zip(body["query"], body["labels"])]
            return 200, {"rewards": rewards}
        samples = body["samples"]
        if path == "/flaky":
            key = json.dumps(samples)
            with self.lock:
                first = key not in self.seen
                self.seen.add(key)
            if first:
                return 503, {"error": "busy"}
        texts = " ".join(s["completion"] for s in samples)
        if "SLOW" in texts:
            time.sleep(1.0)
        if "ERR" in texts:
            return 500, {"error": "boom"}
        if "BAD" in texts:
            return 200, b'{"rewards": [1.0,'
        if "SHORT" in texts:
            return 200, {"rewards": []}
        time.sleep(0.05)  # long enough for requests to overlap
        rewards = [1.0 if s["completion"].strip() == s["answer"] else 0.0 for s in samples]
        return 200, {"rewards": rewards, "infos": [{"len": len(s["completion"])} for s in samples]}

    def judge(self, body: dict, auth: str) -> tuple[int, object]:
        if self.key and auth != f"Bearer {self.key}":
            return 401, {"error": "bad key"}
        message = body["messages"][0]["content"]
        gold = re.search(r"Reference answer:\n(.*?)\n", message).group(1).strip()
        response = message.split("Student's response:\n", 1)[1].rsplit("\n\nDecide", 1)[0]
        if "RAMBLE" in response:
            content = "Looks right to me!"
        else:
            numbers = re.findall(r"-?\d+", response)
            ok = bool(numbers) and numbers[-1] == gold
            content = f"Checking the arithmetic.\nVERDICT: {'CORRECT' if ok else 'INCORRECT'}"
        return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer(key="sekrit-123")
    yield s
    s.close()


def _samples(completions: list[str], answer: str = "7") -> list[dict]:
    return [
        {"id": f"p{i}", "prompt": "What is 3 + 4?", "answer": answer, "completion": c, "group": 0, "index": i}
        for i, c in enumerate(completions)
    ]


def _score(spec: VerifierConfig, samples: list[dict]):
    with opened_verifiers([spec]) as verifiers:
        return score(samples, verifiers)


def test_remote_rewards_and_failures_cost_only_their_samples(server):
    spec = VerifierConfig(
        name="remote",
        failure_value=-1.0,
        options={"url": server.url + "/get_reward", "batch_size": 1, "timeout": 0.3, "retries": 1, "backoff": 0.01},
    )
    samples = _samples(["7", "8", "SLOW 7", "ERR", "BAD", " 7 "])
    scored, summary = _score(spec, samples)
    # 7 and " 7 " match the answer; 8 does not; SLOW, ERR and BAD each fail their own request only.
    assert [r["reward"] for r in scored] == [1.0, 0.0, -1.0, -1.0, -1.0, 1.0]
    counts = summary.verifiers["remote"]
    assert (counts.scored, counts.failed, counts.timed_out) == (4, 2, 1)
    assert scored[2]["info"]["remote"]["timeout"] is True and "within 0.3 s" in scored[2]["info"]["remote"]["error"]
    assert "HTTP 500" in scored[3]["info"]["remote"]["error"] and "2 attempts" in scored[3]["info"]["remote"]["error"]
    assert "malformed JSON" in scored[4]["info"]["remote"]["error"]
    assert scored[0]["info"]["remote"] == {"len": 1}  # the server's infos are kept


def test_remote_failed_batch_costs_exactly_its_batch(server):
    # batch_size 2: [7, 7] [ERR, 7] [7, SHORT]: the second request answers 500, the third too few rewards.
    spec = VerifierConfig(
        name="remote", options={"url": server.url + "/get_reward", "batch_size": 2, "retries": 0, "timeout": 5}
    )
    scored, summary = _score(spec, _samples(["7", "7", "ERR", "7", "7", "SHORT"]))
    assert [r["reward"] for r in scored] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert summary.verifiers["remote"].failed == 4
    assert "0 rewards for 2 samples" in scored[5]["info"]["remote"]["error"]


def test_remote_retries_with_backoff(server):
    spec = VerifierConfig(name="remote", options={"url": server.url + "/flaky", "retries": 2, "backoff": 0.05})
    t0 = time.perf_counter()
    scored, summary = _score(spec, _samples(["7", "6"]))
    assert [r["reward"] for r in scored] == [1.0, 0.0] and summary.failures == 0
    assert server.requests == 2  # the 503, then the answer
    assert time.perf_counter() - t0 >= 0.05  # waited `backoff` before the second attempt


def test_remote_concurrency_is_bounded(server):
    verifier = load_verifier("remote", {"url": server.url + "/get_reward", "batch_size": 1, "concurrency": 2})
    verdicts = verifier.verify(_samples(["7"] * 8))
    assert [v.reward for v in verdicts] == [1.0] * 8
    assert server.requests == 8 and server.max_in_flight <= 2


def test_remote_openrlhf_shape(server):
    verifier = load_verifier("remote", {"url": server.url + "/openrlhf", "format": "openrlhf"})
    # query = prompt + completion; the fake rewards a query that ends with the label.
    assert [v.reward for v in verifier.verify(_samples([" 7", " 9"]))] == [1.0, 0.0]


def test_remote_unreachable_server_costs_its_samples():
    spec = VerifierConfig(name="remote", options={"url": "http://127.0.0.1:9/get_reward", "retries": 0})
    scored, summary = _score(spec, _samples(["7", "7"]))
    assert [r["reward"] for r in scored] == [0.0, 0.0] and summary.verifiers["remote"].failed == 2
    assert "cannot reach" in scored[0]["info"]["remote"]["error"]


def test_judge_grades_strictly_and_never_shows_the_key(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekrit-123")
    spec = VerifierConfig(
        name="judge",
        options={"base_url": server.url + "/v1", "model": "fake", "api_key_env": "JUDGE_KEY", "concurrency": 3},
    )
    samples = _samples(["3 + 4 = 7\n#### 7", "3 + 4 = 8", "RAMBLE 7", "no number"])
    scored, summary = _score(spec, samples)
    assert [r["reward"] for r in scored] == [1.0, 0.0, 0.0, 0.0]
    counts = summary.verifiers["judge"]
    assert (counts.scored, counts.failed) == (3, 1)  # the rambling reply is no verdict: a failure
    assert "no strict verdict" in scored[2]["info"]["judge"]["error"]
    assert "sekrit" not in json.dumps(scored) and "sekrit" not in summary.describe()
    assert "sekrit" not in repr(load_verifier("judge", spec.options).__dict__)


def test_judge_without_the_key_fails_its_samples(server, monkeypatch):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    spec = VerifierConfig(
        name="judge", options={"base_url": server.url + "/v1", "model": "fake", "api_key_env": "JUDGE_KEY"}
    )
    scored, summary = _score(spec, _samples(["7"]))
    assert scored[0]["reward"] == 0.0 and "HTTP 401" in scored[0]["info"]["judge"]["error"]


@pytest.mark.parametrize(
    "content, reward",
    [
        ("VERDICT: CORRECT", 1.0),
        ("reasoning...\n  VERDICT: INCORRECT  \n", 0.0),
        ("VERDICT: CORRECT\nVERDICT: INCORRECT", 0.0),  # the last line decides
        ("VERDICT: correct", None),  # strict: exact words only
        ("VERDICT: CORRECT.", None),
        ("The answer is CORRECT", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(content, reward):
    from grpo_verifiers.judge import parse_verdict

    assert parse_verdict(content) == reward


def test_grpo_score_with_a_remote_server(server, tmp_path):
    rows = _samples(["7", "5", "ERR"])
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = grpo(
        "score",
        "samples.jsonl",
        "--verifier",
        f"remote:url={server.url}/get_reward,batch_size=1,retries=0",
        "--out",
        "scored.jsonl",
        cwd=tmp_path,
    )
    assert [r["reward"] for r in read_jsonl(tmp_path / "scored.jsonl")] == [1.0, 0.0, 0.0]
    assert "remote: mean 0.333, 1 failed, 0 timed out" in proc.stderr
