"""pass@k and maj@k over groups of scored samples (docs/design.md, "Metrics"). Python and numpy, no torch.

A group is the n scored samples of one problem. Both metrics are computed for a list of k from the
same n samples: pass@k with the unbiased estimator, maj@k as the expected majority vote over size-k
subsets of the n samples (every subset when there are few, seeded Monte-Carlo otherwise).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np

from grpo_cli.records import ScoredSample


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that a random size-k subset of n samples (c correct) holds one.

    1 - C(n-c, k) / C(n, k), written as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Codex paper)
    so that large n never builds huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"c={c} correct must be between 0 and n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and n={n} samples")
    if n - c < k:  # every size-k subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def maj_at_k(
    answers: list[str | None],
    correct: list[bool],
    k: int,
    *,
    samples: int = 1000,
    rng: random.Random | None = None,
) -> float:
    """Expected correctness of a majority vote over a random size-k subset of the n samples.

    answers[i] is sample i's canonical answer (the vote key); None means it gave no answer, and such
    samples do not vote: a subset whose k answers are all None scores 0.
    An answer is credited with the fraction of the samples giving it (among all n) that are correct:
    1 or 0 when they agree, as they should; a fraction when they disagree (e.g. another verifier's
    reward pushed one below the threshold). With that rule maj@1 is exactly the mean accuracy
    (counting a correct sample with no answer as wrong, since it cannot vote).
    A tie among t answers credits the mean of their credits (the vote is split evenly).
    Exact for k == 1 and whenever C(n, k) <= samples (every subset is voted; k == n is one subset);
    otherwise the mean over `samples` uniform random subsets seeded from `rng` (default Random(0)).
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"{n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and n={n} samples")
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")

    right: dict[str, int] = {}
    given: dict[str, int] = {}
    for a, ok in zip(answers, correct):
        if a is not None:
            given[a] = given.get(a, 0) + 1
            right[a] = right.get(a, 0) + bool(ok)
    keys = list(given)  # the A distinct answers
    if k == 1:  # each sample votes alone: its answer's credit, averaged
        return sum(right.values()) / n
    if not keys:
        return 0.0
    index = {a: j for j, a in enumerate(keys)}
    ids = np.array([index[a] if a is not None else len(keys) for a in answers])  # [n]; None -> column A
    credit = np.array([right[a] / given[a] for a in keys])  # [A]

    if math.comb(n, k) <= samples:
        subsets = np.array(list(itertools.combinations(range(n), k)))  # [S, k], every subset
    else:
        rng = rng if rng is not None else random.Random(0)
        gen = np.random.default_rng(rng.getrandbits(64))
        subsets = np.argsort(gen.random((samples, n)), axis=1)[:, :k]  # [S, k], uniform subsets
    s_count, width = len(subsets), len(keys) + 1
    flat = (ids[subsets] + width * np.arange(s_count)[:, None]).ravel()
    votes = np.bincount(flat, minlength=s_count * width).reshape(s_count, width)[:, :-1]  # [S, A]
    top = votes.max(axis=1, keepdims=True)  # [S, 1]
    tied = (votes == top) & (top > 0)  # [S, A]; no row is tied when every answer was None
    won = (tied * credit).sum(axis=1) / np.maximum(tied.sum(axis=1), 1)  # [S]
    return float(won.mean())


def vote_key(record: ScoredSample) -> str | None:
    """The sample's answer for voting: `canonical` (else `extracted`) of the first verifier info
    that has one, as a string; None when no verifier extracted an answer."""
    for info in (record.get("info") or {}).values():
        if isinstance(info, dict):
            for field in ("canonical", "extracted"):
                if info.get(field) is not None:
                    return str(info[field])
    return None


def flexible_correct(record: dict[str, Any], threshold: float = 1.0) -> bool | None:
    """Correct under flexible extraction: a verifier's `info["flexible"]` (the reward it would give
    with its unmarked fallbacks, e.g. the `math` verifier's last number) >= threshold; None when no
    verifier reports one."""
    for info in (record.get("info") or {}).values():
        if isinstance(info, dict) and isinstance(info.get("flexible"), (int, float)):
            return info["flexible"] >= threshold
    return None


def _pass_group(answers: list[str | None], correct: list[bool], k: int, rng: random.Random, samples: int) -> float:
    return pass_at_k(len(correct), sum(correct), k)


def _maj_group(answers: list[str | None], correct: list[bool], k: int, rng: random.Random, samples: int) -> float:
    return maj_at_k(answers, correct, k, samples=samples, rng=rng)


METRICS = {"pass@k": _pass_group, "maj@k": _maj_group}


def evaluate_groups(
    groups: list[list[ScoredSample]],
    ks: list[int],
    metrics: list[str],
    seed: int = 0,
    *,
    threshold: float = 1.0,
    samples: int = 1000,
) -> dict[str, Any]:
    """Score each problem's group of samples and average over problems.

    A sample is correct when its `reward` is not None and >= threshold. Returns
    {"problems": P, "n": n, "accuracy": mean over all samples, "<metric>": {k: mean over problems}}
    for each requested metric. Every group must have the same n >= max(ks).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
    if not groups:
        raise ValueError("no problems to evaluate")
    n = len(groups[0])
    for i, group in enumerate(groups):
        if len(group) != n:
            raise ValueError(f"problem {i} has {len(group)} samples, problem 0 has {n}; all need the same n")
    if n == 0:
        raise ValueError("problems have no samples")
    for k in ks:
        if not 1 <= k <= n:
            raise ValueError(f"k={k} > n={n} samples per problem" if k > n else f"k={k} must be >= 1")

    rng = random.Random(seed)
    scored = []
    for group in groups:
        correct = [r.get("reward") is not None and r["reward"] >= threshold for r in group]
        scored.append(([vote_key(r) for r in group], correct))

    result: dict[str, Any] = {
        "problems": len(groups),
        "n": n,
        "accuracy": sum(sum(c) for _, c in scored) / (len(groups) * n),
    }
    flexible = [flexible_correct(r, threshold) for group in groups for r in group]
    if any(f is not None for f in flexible):  # strict-match and flexible-extract, as lm-eval-harness reports
        strict = [c for _, correct in scored for c in correct]
        result["accuracy_flexible"] = sum(s if f is None else f for s, f in zip(strict, flexible)) / len(strict)
    for name in metrics:
        fn = METRICS[name]
        result[name] = {k: sum(fn(a, c, k, rng, samples) for a, c in scored) / len(scored) for k in ks}
    return result


def parse_metrics(text: str) -> list[str]:
    """Parse "maj@k,pass@k" into ["maj@k", "pass@k"] (order kept, duplicates dropped)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"no metrics in {text!r}; valid: {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def parse_ks(text: str) -> list[int]:
    """Parse "1,4,16" into [1, 4, 16] (sorted, duplicates dropped); each k a positive integer."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise ValueError(f"no k values in {text!r}; expected positive integers like 1,4,16")
    ks = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or int(part) < 1:
            raise ValueError(f"bad k {part!r} in {text!r}; expected positive integers like 1,4,16")
        ks.append(int(part))
    return sorted(set(ks))
