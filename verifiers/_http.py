"""JSON over HTTP for the verifiers that ask a server (`remote`, `judge`): standard library only.

`Client.post_all(url, payloads)` sends each payload as one POST, at most `concurrency` in flight,
each attempt bounded by `timeout` seconds, and retries what may pass on a second try (no answer in
time, a refused or dropped connection, HTTP 429 and 5xx) after `backoff * 2**attempt` seconds, up
to `retries` more times. It never raises for one request: each result is the decoded JSON or a
`Failed` saying why, so a bad request costs only the samples it carried. Headers (an API key) are
never put into a message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

MAX_BACKOFF = 30.0
"""Longest wait between two attempts, in seconds."""


@dataclass(frozen=True)
class Failed:
    """Why a request gave no usable answer; `timed_out` when the last attempt ran out of time."""

    error: str
    timed_out: bool = False


class _Retry(Exception):
    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.error)
        self.failed = failed


def check_url(url: Any, option: str = "url") -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{option} must be an http:// or https:// URL, got {url!r}")
    return url


class Client:
    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        concurrency: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not (timeout > 0 and retries >= 0 and backoff >= 0 and concurrency >= 1):
            raise ValueError("timeout must be > 0, retries >= 0, backoff >= 0 and concurrency >= 1")
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.concurrency = int(concurrency)
        self._headers = {"Content-Type": "application/json", **(headers or {})}

    def __repr__(self) -> str:  # never show the headers: they may hold a key
        return f"Client(timeout={self.timeout}, retries={self.retries}, concurrency={self.concurrency})"

    def post_all(self, url: str, payloads: list[Any]) -> list[Any | Failed]:
        """The decoded JSON answer to each payload, or a Failed, in order."""
        if len(payloads) <= 1 or self.concurrency == 1:
            return [self.post(url, p) for p in payloads]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(payloads)), thread_name_prefix="http") as pool:
            return list(pool.map(lambda p: self.post(url, p), payloads))

    def post(self, url: str, payload: Any) -> Any | Failed:
        body = json.dumps(payload).encode("utf-8")
        failed = Failed("not sent")
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)))
            try:
                return self._once(url, body)
            except _Retry as retry:
                failed = retry.failed
            except _Final as final:
                return final.failed
        if self.retries:
            return Failed(f"{failed.error} (after {self.retries + 1} attempts)", failed.timed_out)
        return failed

    def _once(self, url: str, body: bytes) -> Any:
        request = urllib.request.Request(url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            message = f"HTTP {e.code} from {url}"
            if e.code == 429 or e.code >= 500:
                raise _Retry(Failed(message)) from None
            raise _Final(Failed(message)) from None
        except TimeoutError:
            raise _Retry(Failed(f"no answer from {url} within {self.timeout:g} s", timed_out=True)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retry(Failed(f"no answer from {url} within {self.timeout:g} s", timed_out=True)) from None
            raise _Retry(Failed(f"cannot reach {url}: {e.reason}")) from None
        except (ConnectionError, OSError) as e:  # reset mid-answer, refused
            raise _Retry(Failed(f"connection to {url} failed: {type(e).__name__}")) from None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Final(Failed(f"malformed JSON from {url}: {raw[:80]!r}")) from None


class _Final(Exception):
    """A failure that another attempt would repeat (4xx, malformed answer)."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.error)
        self.failed = failed


def failed_info(failed: Failed) -> dict[str, Any]:
    """The Verdict info of a sample whose request failed: counted by the scoring stage."""
    return {"error": failed.error, "timeout": True} if failed.timed_out else {"error": failed.error, "failed": True}
