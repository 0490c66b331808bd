"""The `judge` verifier: an LLM behind an OpenAI-compatible `/v1/chat/completions` endpoint (vLLM,
SGLang, llama.cpp's server, a hosted API) grades each completion against the gold answer.

Each sample is one request: `{"model", "messages": [{"role": "user", "content": TEMPLATE filled}],
"temperature", "max_tokens"}`, `concurrency` at a time. The verdict is read strictly: the last
non-empty line of `choices[0].message.content` must be `VERDICT: CORRECT` (reward 1.0) or
`VERDICT: INCORRECT` (0.0); any other answer, an HTTP error or a timeout costs that sample its
reward (`failure_value`, counted as failed or timed out), never the batch. The API key is read
from the environment variable `api_key_env` and sent only in the Authorization header.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from grpo_verifiers._http import Client, Failed, check_url, failed_info
from grpo_verifiers.base import Verdict, Verifier

DEFAULT_TEMPLATE = """You are grading a student's answer to a problem against the reference answer.

Problem:
{prompt}

Reference answer:
{answer}

Student's response:
{completion}

Decide whether the student's final answer is equivalent to the reference answer; ignore style and
working. Reply with one final line, exactly `VERDICT: CORRECT` or `VERDICT: INCORRECT`."""

VERDICT = re.compile(r"VERDICT:[ \t]*(CORRECT|INCORRECT)")
REWARDS = {"CORRECT": 1.0, "INCORRECT": 0.0}


def parse_verdict(content: Any) -> float | None:
    """1.0 / 0.0 when the last non-empty line is exactly a verdict, else None."""
    if not isinstance(content, str):
        return None
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    found = VERDICT.fullmatch(lines[-1]) if lines else None
    return REWARDS[found.group(1)] if found else None


def fill(template: str, sample: dict[str, Any]) -> str:
    """The template with {prompt}, {answer} and {completion} replaced; other braces are left as
    they are (completions are full of them)."""
    out = template
    for key in ("prompt", "answer", "completion"):
        value = sample.get(key)
        if isinstance(value, list):  # chat messages
            value = "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
        out = out.replace("{" + key + "}", "" if value is None else str(value))
    return out


class JudgeVerifier(Verifier):
    """Ask a chat model whether each completion's answer matches the gold `answer`.

    base_url: the API root, e.g. http://127.0.0.1:8000/v1 (`/chat/completions` is appended).
    model: the model name the server expects.
    api_key_env: environment variable holding the API key (unset or empty: no Authorization header).
    template: the user message, with {prompt}, {answer} and {completion}; template_file: read it
        from a file instead.
    temperature, max_tokens: sent with each request.
    timeout, retries, backoff, concurrency: as for the `remote` verifier.
    """

    name = "judge"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        template: str = DEFAULT_TEMPLATE,
        template_file: str = "",
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        self.url = check_url(base_url, "base_url").rstrip("/") + "/chat/completions"
        if not isinstance(model, str) or not model:
            raise ValueError("model must name the judge model")
        self.model = model
        self.template = Path(template_file).read_text(encoding="utf-8") if template_file else template
        if "{completion}" not in self.template:
            raise ValueError("the judge template must contain {completion}")
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = Client(
            timeout=timeout, retries=retries, backoff=backoff, concurrency=concurrency, headers=headers
        )

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        payloads = [
            {
                "model": self.model,
                "messages": [{"role": "user", "content": fill(self.template, s)}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
            for s in samples
        ]
        return [self._verdict(a) for a in self._client.post_all(self.url, payloads)]

    def _verdict(self, answer: Any) -> Verdict:
        if isinstance(answer, Failed):
            return Verdict(0.0, info=failed_info(answer))
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Verdict(0.0, info=failed_info(Failed(f"answer from {self.url} has no choices[0].message.content")))
        reward = parse_verdict(content)
        if reward is None:
            shown = content[-120:] if isinstance(content, str) else repr(content)
            return Verdict(0.0, info=failed_info(Failed(f"judge gave no strict verdict line: {shown!r}")))
        return Verdict(reward, info={"judge": content[-500:]})
