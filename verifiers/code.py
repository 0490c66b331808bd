"""The `code` verifier: run a completion's Python against the problem's tests in a sandbox whose
verdict the program cannot forge.

Record schema (docs/design.md, "Records"). The solution is the completion's last fenced Python block
(```python, ```py or a bare ```; `extract: first` or `all` to take the first or join them all; an
unclosed last fence counts to the end), else the whole completion (`bare: false` gives 0 instead);
with `prepend_prompt: true` (HumanEval-style completions that continue a string prompt) the prompt
comes first. `tests` takes one of these shapes:
- a string of Python test code (or a list of such strings, as MBPP's `test_list`), run after
  binding the solution's top-level names (builtins' names excepted): each top-level
  statement holding an `assert` is one test, as is each `test*` function, each `test*` method of a
  `unittest.TestCase` subclass, and each `test*` method of a plain `Test*` class; only those that
  read one of the solution's names count (`assert True` is setup: `_code_harness.plan`);
- `{"check": "<code defining check(candidate)>", "entry_point": "<name>"}` (HumanEval; the
  `entry_point` may also be a field of the record, and a string holding `def check(` with a record
  `entry_point` reads the same way): the whole `check(candidate)` is one test, as HumanEval counts;
- a list of `{"input": str, "output": str}` pairs (`stdin`/`stdout` also accepted), or APPS's
  `{"inputs": [...], "outputs": [...]}`, or either as a JSON string: the solution runs as a script
  once per pair, and its stdout must match (`compare`: `lines`, the default, ignores trailing
  spaces and trailing blank lines; `tokens` compares whitespace-separated tokens; `exact`).
A sample without `tests` is not applicable (reward None). Malformed tests raise ValueError naming
the row and field, which costs that sample alone.

Why the verdict cannot be forged: stdin/stdout output is compared here, in the parent. For function
tests the candidate's code runs in one sandboxed process that only answers calls over a pipe
(`_code_harness.serve`), and the tests run in a second sandboxed process that never executes
candidate code: the candidate's names there are proxies, results come back in a tagged JSON
encoding (never pickle), assertions are evaluated there, and each test's result reaches this
process over a pipe the candidate's process never holds. Exiting at import, patching
unittest/pytest/builtins, printing "N passed", lingering threads or a crash only make calls fail.
The tests count comes from parsing the test code here, so a test that never reports has failed.
Limitations: arguments cross the pipe as copies (an in-place change by the candidate is not seen by
the test); a callback passed into the candidate and the candidate's objects used as values
(compared with `==`, iterated) do not cross it; calls and attribute reads on them do, and they
can be passed back to the candidate.

Sandbox: `_sandbox.py` (bubblewrap; a weaker rlimit fallback when `bwrap` is missing or fails, with
a warning and `info["sandbox"] = "rlimit"`). `sandbox: auto|bwrap|rlimit`, or the environment
variable GRPO_CODE_SANDBOX, chooses. Samples run in parallel on `workers` threads, each driving
its own sandboxes: as root, one warm sandbox per worker and `verify` call (`_sandbox.Warm`), whose
zygote forks each run into namespaces, a work dir and a uid of its own (`_code_harness.zygote`);
otherwise, or with `warm: false`, a bubblewrap sandbox per process.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from grpo_verifiers import _sandbox
from grpo_verifiers._code_harness import plan, read_until
from grpo_verifiers.base import Verdict, Verifier

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_warned = False
_warm_works: bool | None = None  # whether the warm sandbox works on this machine, once known
_warm_lock = threading.Lock()


def _warm_probe(work_mb: int, hide: tuple[str, ...]) -> bool:
    """Once per process: can a warm sandbox's zygote make a run's namespaces here? If not, say why
    and give each run a bubblewrap sandbox of its own (as safe, slower)."""
    global _warm_works
    with _warm_lock:
        if _warm_works is None:
            limits = {"cpu": 10, "memory": 0, "fsize": 0, "nproc": 0, "uid": None, "call_timeout": 0}
            job = {"op": "script", "stdin": "", "limits": limits, "timeout": 20, "work": 2**20}
            box = None
            try:
                box = _sandbox.Warm(work_mb, hide)
                result, out, _ = box.run(job, 60, "print(1)")
                _warm_works = out == b"1\n" and result["code"] == 0
                problem = f"its probe printed {out[:100]!r}, exit code {result['code']}"
            except (OSError, RuntimeError) as exc:
                _warm_works, problem = False, str(exc)
            finally:
                if box is not None:
                    box.close()
            if not _warm_works:
                warnings.warn(
                    f"code verifier: the warm sandbox does not work here ({problem}); starting a bubblewrap"
                    " sandbox per run instead (same isolation, slower)",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return _warm_works


def extract_code(completion: str, which: str = "last", bare: bool = True) -> tuple[str, str] | None:
    """`(code, how)` with how "fenced" or "bare", or None when there is no code to run."""
    blocks = [m.group(2) for m in _FENCE.finditer(completion)]
    if blocks:
        code = blocks[0] if which == "first" else "\n".join(blocks) if which == "all" else blocks[-1]
        return code, "fenced"
    if bare and completion.strip():
        return completion, "bare"
    return None


@dataclass(frozen=True)
class Tests:
    """One sample's tests: kind "code" or "check" (function tests), or "io" (stdin/stdout pairs)."""

    kind: str
    names: tuple[str, ...] = ()
    code: str = ""
    entry_point: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()


def _pairs(value: Any) -> list[tuple[str, str]] | None:
    if isinstance(value, dict) and set(value) >= {"inputs", "outputs"}:
        ins, outs = value["inputs"], value["outputs"]
        if isinstance(ins, list) and isinstance(outs, list) and len(ins) == len(outs):
            value = [{"input": i, "output": o} for i, o in zip(ins, outs)]
    if not isinstance(value, list) or not value or not all(isinstance(p, dict) for p in value):
        return None
    pairs = []
    for pair in value:
        given = pair.get("input", pair.get("stdin"))
        wanted = pair.get("output", pair.get("stdout"))
        if isinstance(given, list):  # APPS sometimes splits lines
            given = "\n".join(map(str, given))
        if isinstance(wanted, list):
            wanted = "\n".join(map(str, wanted))
        if not isinstance(given, str) or not isinstance(wanted, str):
            return None
        pairs.append((given, wanted))
    return pairs


def parse_tests(sample: dict[str, Any]) -> Tests | None:
    """The sample's tests, None when it has none; ValueError naming the field when malformed."""
    raw = sample.get("tests")
    if raw is None or raw == "" or raw == []:
        return None
    where = f"row {sample['id']!r}" if "id" in sample else "a row"
    if isinstance(raw, str) and raw.lstrip()[:1] in ("[", "{"):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            pass  # Python code that starts with a bracket
    pairs = _pairs(raw)
    if pairs is not None:
        return Tests("io", tuple(f"io:{i}" for i in range(len(pairs))), pairs=tuple(pairs))
    if isinstance(raw, list) and raw and all(isinstance(line, str) for line in raw):
        raw = "\n".join(raw)  # MBPP's `test_list`: one assert per string
    entry = sample.get("entry_point")
    if isinstance(raw, dict) and isinstance(raw.get("check"), str):
        kind, code, entry = "check", raw["check"], raw.get("entry_point", entry)
    elif isinstance(raw, str):
        kind = "check" if entry and re.search(r"^def check\(", raw, re.MULTILINE) else "code"
        code = raw
    else:
        raise ValueError(
            f"{where}: field 'tests' must be Python test code, {{'check', 'entry_point'}}, or a list of"
            f" {{'input', 'output'}} pairs; got {type(raw).__name__}"
        )
    try:
        names = plan(kind, code, entry)
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"{where}: field 'tests': {type(exc).__name__}: {exc}") from None
    return Tests(kind, tuple(names), code=code, entry_point=entry)


def outputs_match(got: str, wanted: str, mode: str) -> bool:
    if mode == "exact":
        return got == wanted
    if mode == "tokens":
        return got.split() == wanted.split()

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    return lines(got.rstrip()) == lines(wanted.rstrip())


class CodeVerifier(Verifier):
    """Reward: the fraction of the problem's tests the completion's code passes (`reward: all` gives
    1.0 only when all pass).

    extract: which fenced block, `last`, `first` or `all`. bare: run an unfenced completion as code.
    prepend_prompt: the solution is the prompt followed by the completion (HumanEval).
    timeout: seconds per test: one stdin/stdout run, or one call into the candidate.
    total_timeout: seconds for a sample's function tests (both processes), then all is killed.
    memory_mb, fsize_mb, nproc: address space, largest file, processes (non-root uid only).
    work_mb: size of the sandbox's tmpfs work dir. max_output_kb: stdout kept per stdin/stdout run.
    compare: `lines`, `tokens` or `exact` for stdout. workers: samples run at once.
    sandbox: `auto` (bubblewrap when it works, else the weaker rlimit fallback), `bwrap`, `rlimit`.
    warm: with bubblewrap as root, fork runs from one pre-started sandbox per worker (same isolation
    per run, several times faster); false starts a sandbox per process.
    hide: more host paths to mask inside the sandbox. uid_base: first uid for runs as root.
    """

    name = "code"

    def __init__(
        self,
        *,
        extract: str = "last",
        bare: bool = True,
        prepend_prompt: bool = False,
        reward: str = "fraction",
        timeout: float = 5.0,
        total_timeout: float = 30.0,
        memory_mb: int = 1024,
        fsize_mb: int = 16,
        nproc: int = 64,
        work_mb: int = 64,
        max_output_kb: int = 1024,
        compare: str = "lines",
        workers: int | None = None,
        sandbox: str | None = None,
        warm: bool = True,
        hide: Sequence[str] | str = (),
        uid_base: int = 1_900_000_000,
    ) -> None:
        if extract not in ("last", "first", "all"):
            raise ValueError(f"extract must be last, first or all, got {extract!r}")
        if reward not in ("fraction", "all"):
            raise ValueError(f"reward must be fraction or all, got {reward!r}")
        if compare not in ("lines", "tokens", "exact"):
            raise ValueError(f"compare must be lines, tokens or exact, got {compare!r}")
        sandbox = sandbox or os.environ.get("GRPO_CODE_SANDBOX") or "auto"
        if sandbox not in ("auto", "bwrap", "rlimit"):
            raise ValueError(f"sandbox must be auto, bwrap or rlimit, got {sandbox!r}")
        self.extract, self.bare, self.prepend_prompt = extract, bool(bare), bool(prepend_prompt)
        self.all_or_nothing = reward == "all"
        self.timeout, self.total_timeout = float(timeout), float(total_timeout)
        self.memory_mb, self.fsize_mb, self.nproc = int(memory_mb), int(fsize_mb), int(nproc)
        self.work_mb, self.max_output = int(work_mb), int(max_output_kb) * 1024
        self.compare = compare
        self.workers = int(workers) if workers is not None else max(1, min(4, os.cpu_count() or 1))
        self.hide = tuple(p for p in (hide.split(",") if isinstance(hide, str) else hide) if p)
        self.uid_base = int(uid_base)
        if (
            min(self.timeout, self.total_timeout) <= 0
            or min(self.memory_mb, self.fsize_mb, self.nproc, self.work_mb, self.workers) < 1
        ):
            raise ValueError("timeouts, memory_mb, fsize_mb, nproc, work_mb and workers must be positive")
        self.use_bwrap = self._choose_sandbox(sandbox)
        # runs of a warm sandbox need uids of their own, which only root can switch to
        self.warm = bool(warm) and self.use_bwrap and os.geteuid() == 0
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            self._slots.put(slot)

    def _choose_sandbox(self, wanted: str) -> bool:
        global _warned
        if wanted == "rlimit":
            problem = "the rlimit sandbox was chosen"
        else:
            problem = self._probe_bwrap()
            if problem is None:
                return True
            if wanted == "bwrap":
                raise ValueError(f"sandbox=bwrap, but bubblewrap does not work here: {problem}")
        if not _warned:
            _warned = True
            warnings.warn(
                f"code verifier: {problem}; running untrusted code with rlimits, a process group and a"
                " temporary directory only: NO network, filesystem or PID isolation. Install bubblewrap"
                " (Debian/Ubuntu package `bubblewrap`) for the real sandbox.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False

    def _probe_bwrap(self) -> str | None:
        """None when bubblewrap can start a sandbox here, else why not."""
        if _sandbox.bwrap_path() is None:
            return "`bwrap` is not installed"
        cmd = _sandbox.bwrap_command({}, 1, self.hide) + ["/bin/true"]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap failed to start: {exc}"
        if done.returncode != 0:
            return f"bwrap failed to start: {done.stderr.decode(errors='replace').strip()[:200]}"
        return None

    # ------------------------------------------------------------ scoring

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        parsed = [parse_tests(sample) for sample in samples]  # raises before anything runs
        boxes: dict[int, _sandbox.Warm] = {}  # this call's warm sandboxes, by slot
        try:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(lambda s, t: self._verify_one(s, t, boxes), samples, parsed))
        finally:
            for box in boxes.values():
                box.close()

    def _warm_box(self, slot: int, boxes: dict[int, _sandbox.Warm]) -> _sandbox.Warm | None:
        """The slot's warm sandbox for this call (a fresh one after a failure), None when runs get
        a bubblewrap sandbox each (`warm: false`, not root, or the warm sandbox cannot work here)."""
        if not self.warm or not _warm_probe(self.work_mb, self.hide):
            return None
        box = boxes.get(slot)
        if box is None or box.broken:
            box = boxes[slot] = _sandbox.Warm(self.work_mb, self.hide)
        return box

    def _verify_one(self, sample: dict[str, Any], tests: Tests | None, boxes: dict | None = None) -> Verdict:
        if tests is None:
            return Verdict(None, info={"reason": "the sample has no 'tests'"})
        completion = str(sample.get("completion", ""))
        found = extract_code(completion, self.extract, self.bare)
        info: dict[str, Any] = {"sandbox": "bwrap" if self.use_bwrap else "rlimit", "total": len(tests.names)}
        if found is None:
            return Verdict(0.0, info={**info, "passed": 0, "extracted": None, "error": "no code in the completion"})
        code, how = found
        prompt = sample.get("prompt")
        if self.prepend_prompt and isinstance(prompt, str):
            code = prompt + completion if how == "bare" else prompt + "\n" + code
        info["extracted"] = how
        slot = self._slots.get()
        try:
            box = self._warm_box(slot, boxes) if boxes is not None else None
            if tests.kind == "io":
                results = self._run_io(code, tests, slot, box)
            else:
                results = self._run_functions(code, tests, slot, info, box)
        except Exception as exc:  # a harness failure costs this sample, never the run
            results = {}
            info["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self._slots.put(slot)
        passed = sum(1 for name in tests.names if results.get(name, (False,))[0])
        failures = [
            {"test": n, "error": results.get(n, (False, "not run"))[1]}
            for n in tests.names
            if not results.get(n, (False,))[0]
        ]
        info.update(passed=passed, failures=failures[:3])
        total = len(tests.names)
        reward = float(passed == total) if self.all_or_nothing else passed / total
        return Verdict(reward, info=info)

    def _limits(self, uid: int | None, cpu_s: float, call_timeout: float = 0.0) -> _sandbox.Limits:
        return _sandbox.Limits(
            cpu_s=max(1, math.ceil(cpu_s)),
            memory_mb=self.memory_mb,
            fsize_mb=self.fsize_mb,
            nproc=self.nproc if self.use_bwrap else 0,  # see _sandbox: the fallback shares a uid
            uid=uid,
            call_timeout=call_timeout,
        )

    def _uid(self, slot: int, which: int) -> int | None:
        """A uid of this run's own (as root under bubblewrap), so that RLIMIT_NPROC binds."""
        return self.uid_base + 2 * slot + which if self.use_bwrap and os.geteuid() == 0 else None

    def _run_io(
        self, code: str, tests: Tests, slot: int, box: _sandbox.Warm | None = None
    ) -> dict[str, tuple[bool, str | None]]:
        results: dict[str, tuple[bool, str | None]] = {}
        for name, (given, wanted) in zip(tests.names, tests.pairs):
            if box is not None and box.fits(code):
                limits = self._limits(self._uid(slot, 0), self.timeout).as_dict()
                job = {"op": "script", "stdin": given, "limits": limits, "timeout": self.timeout,
                       "work": self.work_mb * 2**20}  # fmt: skip
                result, out, over = box.run(job, self.timeout + 10, code, limit=self.max_output)
                problem = "timed out" if result["timed_out"] else "output over the limit" if over else None
            else:
                out, problem = self._run_script_cold(code, given, slot)
            if problem is None and not outputs_match(out.decode("utf-8", errors="replace"), wanted, self.compare):
                problem = "wrong output"
            results[name] = (problem is None, problem)
        return results

    def _run_script_cold(self, code: str, given: str, slot: int) -> tuple[bytes, str | None]:
        with tempfile.TemporaryFile() as stdin:
            stdin.write(given.encode("utf-8"))
            stdin.seek(0)
            box = _sandbox.Sandboxed(
                "script", {"solution.py": code}, self._limits(self._uid(slot, 0), self.timeout),
                use_bwrap=self.use_bwrap, stdin=stdin, stdout=subprocess.PIPE, work_mb=self.work_mb, hide=self.hide,
            )  # fmt: skip
        try:
            return read_until(box.process.stdout.fileno(), time.monotonic() + self.timeout, self.max_output)
        finally:
            box.kill()
            box.process.stdout.close()

    def _run_functions(
        self, code: str, tests: Tests, slot: int, info: dict[str, Any], box: _sandbox.Warm | None = None
    ) -> dict[str, tuple[bool, str | None]]:
        spec = {"kind": tests.kind, "code": tests.code, "entry_point": tests.entry_point}
        if box is not None and box.fits(code, spec):
            job = {
                "op": "functions", "total": self.total_timeout, "work": self.work_mb * 2**20,
                "serve": self._limits(self._uid(slot, 0), self.total_timeout).as_dict(),
                "test": self._limits(self._uid(slot, 1), self.total_timeout, self.timeout).as_dict(),
            }  # fmt: skip
            result, data, _ = box.run(job, self.total_timeout + 10, code, spec)
            problem = "timed out" if result["timed_out"] else None
            died = f"exit code {result['code']}"
            return self._read_reports(
                data.decode("utf-8", errors="replace"), problem, lambda: died, tests, info, box.jobs
            )
        return self._run_functions_cold(code, json.dumps(spec), tests, slot, info)

    def _read_reports(
        self, data: str, problem: str | None, stderr: Any, tests: Tests, info: dict[str, Any], job: int | None = None
    ) -> dict[str, tuple[bool, str | None]]:
        """Each test's result from the test process's report lines (those of warm sandbox job
        `job`, when given); `stderr()` says why it died."""
        results: dict[str, tuple[bool, str | None]] = {}
        if problem == "timed out":
            info["timed_out"] = True
        done = False
        for line in data.splitlines():
            try:
                report = json.loads(line)
                name, ok, error = report["name"], report["ok"] is True, report["error"]
                if job is not None and report["job"] != job:
                    continue
            except (ValueError, KeyError, TypeError):
                continue
            if name in tests.names and name not in results:
                results[name] = (ok, None if error is None else str(error))
            elif name == "":
                done = done or ok
                if not ok:
                    info["error"] = str(error)[-500:]
        if problem is None and not done:
            info["error"] = "the test process died: " + stderr()
        return results

    def _run_functions_cold(
        self, code: str, spec: str, tests: Tests, slot: int, info: dict[str, Any]
    ) -> dict[str, tuple[bool, str | None]]:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        rep_r, rep_w = os.pipe()
        boxes: list[_sandbox.Sandboxed] = []
        results: dict[str, tuple[bool, str | None]] = {}
        try:
            options = {"use_bwrap": self.use_bwrap, "work_mb": self.work_mb, "hide": self.hide}
            cpu = self.total_timeout
            boxes.append(
                _sandbox.Sandboxed(
                    "serve",
                    {"solution.py": code},
                    self._limits(self._uid(slot, 0), cpu),
                    pass_fds=(req_r, resp_w),
                    **options,
                )
            )
            with tempfile.TemporaryFile() as stderr:
                boxes.append(
                    _sandbox.Sandboxed(
                        "test", {"tests.json": spec}, self._limits(self._uid(slot, 1), cpu, self.timeout),
                        pass_fds=(req_w, resp_r, rep_w), stderr=stderr, **options,
                    )
                )  # fmt: skip
                for fd in (req_r, req_w, resp_r, resp_w, rep_w):  # the sandboxes hold them now
                    os.close(fd)
                req_r = req_w = resp_r = resp_w = rep_w = -1
                data, problem = read_until(rep_r, time.monotonic() + self.total_timeout, 4 * 2**20)

                def died() -> str:
                    stderr.seek(0)
                    return stderr.read()[-500:].decode(errors="replace")

                results = self._read_reports(data.decode("utf-8", errors="replace"), problem, died, tests, info)
        finally:
            for box in boxes:
                box.kill()
            for fd in (req_r, req_w, resp_r, resp_w, rep_w, rep_r):
                if fd >= 0:
                    os.close(fd)
        return results
