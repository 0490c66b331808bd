"""A rule-based reward server and judge to try the `remote` and `judge` verifiers against (stdlib only).

    python examples/reward_server.py --port 5000

POST /get_reward           grpo shape {"samples": [...]} or OpenRLHF's {"query": [...], "labels": [...]}
                           -> {"rewards": [...]}: 1.0 when the last number written equals the gold answer
POST /v1/chat/completions  an OpenAI-compatible "judge" that applies the same rule to the grading prompt
                           of the `judge` verifier and answers `VERDICT: CORRECT` or `VERDICT: INCORRECT`

Put a reward model or a real judge behind the same routes; grpo needs only the JSON shapes.
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text or "")
    return found[-1] if found else None


def reward(completion: str, answer: str) -> float:
    gold = last_number(str(answer))
    return 1.0 if gold is not None and last_number(completion) == gold else 0.0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/get_reward" and "samples" in body:
            out = {"rewards": [reward(s["completion"], s.get("answer")) for s in body["samples"]]}
        elif self.path == "/get_reward":  # OpenRLHF: the query is prompt + completion
            out = {"rewards": [reward(q, label) for q, label in zip(body["query"], body.get("labels", []))]}
        elif self.path == "/v1/chat/completions":
            message = body["messages"][-1]["content"]
            gold = message.split("Reference answer:", 1)[-1].split("Student's response:", 1)[0]
            response = message.split("Student's response:", 1)[-1].rsplit("Decide whether", 1)[0]
            verdict = "CORRECT" if reward(response, gold) else "INCORRECT"
            out = {"choices": [{"message": {"role": "assistant", "content": f"VERDICT: {verdict}"}}]}
        else:
            self.send_error(404)
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
