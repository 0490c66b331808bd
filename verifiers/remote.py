"""The `remote` verifier: rewards from a reward server (a reward model, a sandbox, a rule service).

Samples go out in batches of `batch_size` as one JSON POST each, `concurrency` at a time.

format `grpo` (default):
    request  {"samples": [{"id", "prompt", "completion", "answer", ...`fields`}, ...]}
    response {"rewards": [float | null, ...], "infos": [{...}, ...]}   (`infos` optional)
format `openrlhf` (OpenRLHF's `/get_reward`):
    request  {"query": [prompt + completion, ...], "prompts": [prompt, ...], "labels": [answer, ...]}
    response {"rewards": [float, ...]}

One reward per sample, in order; `null` means "does not apply". A request that times out, fails
after its retries, or whose answer is not that shape costs only its own samples: each gets the
spec's `failure_value`, counted as failed (or timed out) in the summary and in metrics.jsonl.
"""

from __future__ import annotations

import math
import os
from numbers import Real
from typing import Any

from grpo_verifiers._http import Client, Failed, check_url, failed_info
from grpo_verifiers.base import Verdict, Verifier

FORMATS = ("grpo", "openrlhf")


def _text(value: Any) -> str:
    if isinstance(value, list):  # chat messages
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return "" if value is None else str(value)


class RemoteVerifier(Verifier):
    """POST batches of samples to `url` and take the rewards it answers.

    url: the endpoint, e.g. http://127.0.0.1:5000/get_reward.
    format: grpo or openrlhf (the request and response shapes in this module's docstring).
    batch_size: samples per request. concurrency: requests in flight at once.
    timeout: seconds per attempt. retries: further attempts after a timeout, a connection error,
        HTTP 429 or 5xx, waiting backoff, 2 x backoff, ... seconds between them.
    fields: extra sample fields sent with each sample (format grpo), e.g. [tests, metadata].
    api_key_env: name of an environment variable holding a bearer token (empty: none).
    """

    name = "remote"

    def __init__(
        self,
        *,
        url: str,
        format: str = "grpo",
        batch_size: int = 32,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 1.0,
        fields: list[str] | None = None,
        api_key_env: str = "",
    ) -> None:
        self.url = check_url(url)
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.format, self.batch_size, self.fields = format, int(batch_size), list(fields or [])
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"api_key_env: environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = Client(
            timeout=timeout, retries=retries, backoff=backoff, concurrency=concurrency, headers=headers
        )

    def _payload(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        if self.format == "openrlhf":
            return {
                "query": [_text(s.get("prompt")) + _text(s.get("completion")) for s in batch],
                "prompts": [_text(s.get("prompt")) for s in batch],
                "labels": [s.get("answer") for s in batch],
            }
        keys = ("id", "prompt", "completion", "answer", *self.fields)
        return {"samples": [{k: s.get(k) for k in keys} for s in batch]}

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        batches = [samples[i : i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        answers = self._client.post_all(self.url, [self._payload(b) for b in batches])
        verdicts: list[Verdict] = []
        for batch, answer in zip(batches, answers):
            verdicts += self._verdicts(len(batch), answer)
        return verdicts

    def _verdicts(self, n: int, answer: Any) -> list[Verdict]:
        """n verdicts from one answer, or n failures when the answer is not a usable one."""
        if isinstance(answer, Failed):
            return [Verdict(0.0, info=failed_info(answer)) for _ in range(n)]
        rewards = answer.get("rewards") if isinstance(answer, dict) else None
        infos = answer.get("infos") if isinstance(answer, dict) else None
        problem = None
        if not isinstance(rewards, list) or len(rewards) != n:
            count = len(rewards) if isinstance(rewards, list) else "no"
            problem = f"answer from {self.url} has {count} rewards for {n} samples"
        elif not all(
            r is None or (isinstance(r, Real) and not isinstance(r, bool) and math.isfinite(r)) for r in rewards
        ):
            problem = f"answer from {self.url} has a reward that is not a finite number or null"
        if problem:
            return [Verdict(0.0, info=failed_info(Failed(problem))) for _ in range(n)]
        if not (isinstance(infos, list) and len(infos) == n and all(isinstance(i, dict) for i in infos)):
            infos = [{} for _ in range(n)]
        return [Verdict(None if r is None else float(r), info=dict(i)) for r, i in zip(rewards, infos)]
