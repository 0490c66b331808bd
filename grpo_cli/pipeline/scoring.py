"""The scoring stage shared by `grpo score`, `grpo eval` and the trainer (docs/design.md, "Records"
and "Verifiers").

Samples in, scored samples out: each verifier scores the batch; a verifier that raises, hangs past
the spec's `hang_timeout` (seconds per sample), returns the wrong number of verdicts, or a reward
that is not a finite number is retried sample by sample, and a sample that still fails (or whose
verdict's info says `timeout` or `failed`) gets the spec's `failure_value`, its error in `info`,
and is counted. verify() runs in a worker thread when `hang_timeout` is set, so a plugin must not
rely on signals.
A row's optional `verifier` field (a name or a list of names) limits it to those verifiers.
Nothing here prints; the summary says what happened.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real
from typing import Any

from grpo_verifiers.base import Verdict, Verifier

from grpo_cli.config import VerifierConfig as VerifierSpec
from grpo_cli.errors import UserError
from grpo_cli.plugins import load_verifier
from grpo_cli.records import Sample, ScoredSample


@dataclass
class VerifierCounts:
    """scored: samples it gave a reward (its own timeouts included); failed: samples it failed on
    (raised, garbage) that got `failure_value`; timed_out: verdicts marked `timeout` and samples
    whose call hung past `hang_timeout`, which also get `failure_value`; not_applicable: reward
    None, or a row routed elsewhere."""

    scored: int = 0
    failed: int = 0
    timed_out: int = 0
    not_applicable: int = 0
    reward_sum: float = 0.0
    first_error: str | None = None

    @property
    def reward_mean(self) -> float:
        """Mean reward over the samples it gave a reward or a failure value, NaN when none."""
        counted = self.scored + self.failed
        return self.reward_sum / counted if counted else math.nan


@dataclass
class ScoreSummary:
    samples: int
    reward_mean: float
    verifiers: dict[str, VerifierCounts]

    @property
    def failures(self) -> int:
        """Samples that got a failure value from some verifier (raised, garbage, or timed out)."""
        return sum(c.failed + c.timed_out for c in self.verifiers.values())

    def describe(self) -> str:
        """One line: mean reward, then each verifier's mean, failures and timeouts (zeros included,
        so a clean run says so) and its first error."""
        parts = [f"mean reward {self.reward_mean:.3f}"]
        for name, c in self.verifiers.items():
            mean = "n/a" if math.isnan(c.reward_mean) else f"{c.reward_mean:.3f}"
            detail = f"{name}: mean {mean}, {c.failed} failed, {c.timed_out} timed out"
            parts.append(detail + (f" (first: {c.first_error})" if c.first_error else ""))
        return "; ".join(parts)


def _problem(verdict: Any) -> str | None:
    """Why one verdict is garbage, or None when it is well formed."""
    if not isinstance(verdict, Verdict):
        return f"returned {type(verdict).__name__}, not a Verdict"
    reward = verdict.reward
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, Real) or not math.isfinite(reward)):
        return f"reward {reward!r} is not a finite number"
    if verdict.steps is not None:
        for step in verdict.steps:
            step_reward = step.get("reward") if isinstance(step, dict) else None
            if not isinstance(step_reward, Real) or not math.isfinite(step_reward):
                return f"step {step!r} has no finite reward"
    if not isinstance(verdict.info, dict):
        return "info is not a dict"
    return None


class TimedOut(str):
    """The error of a verify() call that overran its time: the sample counts as timed out."""


class _Hung(Exception):
    pass


RETIRE_AFTER = 3
"""Hung calls after which a verifier is given up on for the rest of the batch (each hang leaves a thread behind)."""


def _call(verifier: Verifier, batch: list[Sample], seconds: float) -> Any:
    """`verifier.verify(batch)`, raising _Hung after `seconds` (0: wait forever).

    The call runs in a daemon thread because a hung plugin cannot be interrupted safely; the thread
    is abandoned, which is why the caller stops calling a verifier that keeps hanging."""
    if seconds <= 0:
        return verifier.verify(batch)
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["verdicts"] = verifier.verify(batch)
        except BaseException as exc:  # handed to the caller's thread below
            out["error"] = exc

    worker = threading.Thread(target=run, name=f"verify-{verifier.name or type(verifier).__name__}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Hung(f"verify() still running after {seconds:g} s for {len(batch)} samples")
    if "error" in out:
        raise out["error"]
    return out["verdicts"]


def _verify(verifier: Verifier, batch: list[Sample], seconds: float) -> list[Verdict] | str:
    """The verdicts for `batch`, or the reason they cannot be used (a TimedOut when it hung)."""
    try:
        verdicts = _call(verifier, batch, seconds)
    except _Hung as hang:
        return TimedOut(hang.args[0])
    except Exception as exc:  # a verifier's bug costs its samples, not the run
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    if not isinstance(verdicts, Sequence) or len(verdicts) != len(batch):
        count = len(verdicts) if isinstance(verdicts, Sequence) else type(verdicts).__name__
        return f"returned {count} verdicts for {len(batch)} samples"
    for verdict in verdicts:
        problem = _problem(verdict)
        if problem is not None:
            return problem
    return list(verdicts)


def _verify_isolated(verifier: Verifier, batch: list[Sample], hang_timeout: float = 0.0) -> list[Verdict | str]:
    """One verdict or error per sample: the whole batch first (allowed `hang_timeout` seconds per
    sample), sample by sample if that fails; after RETIRE_AFTER hangs the rest time out unasked."""
    result = _verify(verifier, batch, hang_timeout * len(batch))
    if not isinstance(result, str):
        return list(result)
    if len(batch) == 1:
        return [result]
    isolated: list[Verdict | str] = []
    hangs = 1 if isinstance(result, TimedOut) else 0
    for sample in batch:
        if hangs >= RETIRE_AFTER:
            isolated.append(TimedOut(f"not run: the verifier hung {hangs} times in this batch"))
            continue
        one = _verify(verifier, [sample], hang_timeout)
        hangs += isinstance(one, TimedOut)
        isolated.append(one if isinstance(one, str) else one[0])
    return isolated


def _routes(sample: Sample, name: str) -> bool:
    wanted = sample.get("verifier")
    if wanted is None:
        return True
    return name == wanted if isinstance(wanted, str) else name in wanted


def score(
    samples: list[Sample], verifiers: list[tuple[VerifierSpec, Verifier]]
) -> tuple[list[ScoredSample], ScoreSummary]:
    """New records: each sample plus `reward` (the weighted sum over the verifiers that applied,
    0.0 when none did), `rewards` ({name: float | None}), `info` ({name: info}) and `steps` (from
    the first verifier that gave some)."""
    names = {spec.name for spec, _ in verifiers}
    for sample in samples:
        wanted = sample.get("verifier")
        wanted = [wanted] if isinstance(wanted, str) else (wanted or [])
        missing = [name for name in wanted if name not in names]
        if missing:
            where = f"row {sample['id']!r}" if "id" in sample else "a row"
            raise UserError(f"{where} asks for verifier {missing[0]!r}, not in this run's verifiers: {sorted(names)}")

    stale = ("reward", "rewards", "info", "steps")  # from an earlier scoring of the same samples
    records = [{k: v for k, v in sample.items() if k not in stale} for sample in samples]
    for record in records:
        record.update(reward=0.0, rewards={}, info={})
    counts: dict[str, VerifierCounts] = {}
    for spec, verifier in verifiers:
        tally = counts[spec.name] = VerifierCounts()
        chosen = [i for i, sample in enumerate(samples) if _routes(sample, spec.name)]
        results = _verify_isolated(verifier, [samples[i] for i in chosen], spec.hang_timeout) if chosen else []
        by_index: dict[int, Verdict | str] = dict(zip(chosen, results))
        for i, record in enumerate(records):
            result = by_index.get(i)
            if result is None:  # routed elsewhere
                reward, info = None, {}
                tally.not_applicable += 1
            elif isinstance(result, str):
                reward, info = spec.failure_value, {"error": str(result)}
                if isinstance(result, TimedOut):
                    info["timeout"] = True
                    tally.timed_out += 1
                else:
                    tally.failed += 1
                tally.first_error = tally.first_error or str(result)
            else:
                reward, info = result.reward, dict(result.info)
                if info.get("failed"):  # the verifier could not judge this one (e.g. its server failed)
                    reward = spec.failure_value
                    tally.failed += 1
                    tally.first_error = tally.first_error or str(info.get("error", "failed"))
                elif reward is None:
                    tally.not_applicable += 1
                else:
                    if info.get("timeout"):
                        reward = spec.failure_value
                        tally.timed_out += 1
                        tally.first_error = tally.first_error or str(info.get("error", "timed out"))
                    tally.scored += 1
                    reward = float(reward)
                if result.steps is not None and "steps" not in record:
                    record["steps"] = [dict(step) for step in result.steps]
            record["rewards"][spec.name] = reward
            record["info"][spec.name] = info
            if reward is not None:
                tally.reward_sum += reward
                record["reward"] += spec.weight * reward
    mean = sum(r["reward"] for r in records) / len(records) if records else math.nan
    return records, ScoreSummary(samples=len(records), reward_mean=mean, verifiers=counts)


def open_verifiers(specs: Sequence[VerifierSpec]) -> list[tuple[VerifierSpec, Verifier]]:
    """Construct each spec's verifier; on a failure the ones already opened are closed."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UserError(f"verifier {spec.name!r} is listed twice")
        seen.add(spec.name)
    opened: list[tuple[VerifierSpec, Verifier]] = []
    try:
        for spec in specs:
            opened.append((spec, load_verifier(spec.name, plain_model_option(spec.options))))
    except BaseException:
        close_verifiers(opened)
        raise
    return opened


def plain_model_option(options: dict[str, Any]) -> dict[str, Any]:
    """A verifier's `model` option that names a LoRA checkpoint (a `grpo train` run with LoRA, a
    reward model trained so) becomes its base with the adapter merged in, cached once
    (`models.loading.cached_merge`): a checkpoint is a model like any other, and verifiers load
    plain folders. A checkpoint whose base moved: `grpo model merge CKPT --set model.base=... --out DIR`."""
    from pathlib import Path

    from grpo_cli.models import lora

    path = options.get("model")
    if not isinstance(path, str) or not lora.is_adapter_dir(Path(path).expanduser()):
        return options
    from grpo_cli.models.loading import cached_merge

    return {**options, "model": str(cached_merge(Path(path).expanduser()))}


def close_verifiers(opened: Sequence[tuple[VerifierSpec, Verifier]]) -> None:
    """Call every verifier's `close()`, all of them even if one raises (the first error is re-raised)."""
    first: BaseException | None = None
    for _, verifier in opened:
        try:
            verifier.close()
        except BaseException as exc:
            first = first or exc
    if first is not None:
        raise first


@contextmanager
def opened_verifiers(specs: Sequence[VerifierSpec]) -> Iterator[list[tuple[VerifierSpec, Verifier]]]:
    """`with opened_verifiers(specs) as verifiers: score(samples, verifiers)`; closes them after."""
    opened = open_verifiers(specs)
    try:
        yield opened
    finally:
        close_verifiers(opened)
