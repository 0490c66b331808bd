"""Learned reward models: build, label, train and evaluate them (DeepSeekMath 4.1.4, Math-Shepherd).

A reward model folder is a Hugging Face model in one of the two shapes the `prm` verifier's `hf`
backend reads (`grpo_verifiers/prm_hf.py`), plus `reward_model.json` saying how to score with it:

- `math_shepherd`: a causal LM; a step's score is P(`+`) among {`+`, `-`} at the step tag `ки` put
  after it (the tag is added to the tokenizer as one token when it is not one already);
- `qwen`: a token-classification head with 2 classes (class 1 = good) read at the `<extra_0>`
  separator after each step (added as a special token).

Kinds: a process RM (`prm`) has a label per step (line); an outcome RM (`orm`) has one label at a
tag after the whole completion (the verifier with `split=tag` sees no tag inside the completion, so
the completion is its one step). Both train the same way: cross-entropy of the 2 logits at each
labelled tag. The training inputs are built by the verifier's own `build_input`, so a trained folder
scores exactly what it was trained on: `--verifier prm:backend=hf,model=DIR,final_answer=false`.

Step labels (`label_records`): from scored samples' `steps` (e.g. `grpo score --verifier prm`, the
rule checker of the arithmetic task's `a op b = c` lines), `rule` (run that checker now), or
`rollouts` (Math-Shepherd's hard estimate: a step is good when one of K continuations sampled from
it reaches the right answer). With `steps`/`rule` a step is good when it and every scored step
before it hold (a later step cannot rescue a wrong earlier one). An ORM's label is the outcome.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from grpo_cli.config import Config, VerifierConfig
from grpo_cli.errors import UserError
from grpo_cli.report import Reporter

META_FILE = "reward_model.json"
KINDS = ("prm", "orm")
STYLES = ("math_shepherd", "qwen")
STEP_TAG, GOOD, BAD, SEPARATOR = "ки", "+", "-", "<extra_0>"  # the hf backend's defaults
SPLIT_OF_KIND = {"prm": "line", "orm": "tag"}
"""How the verifier cuts a completion into steps for each kind (an ORM's one step: the completion)."""
HEADS = {"math_shepherd": "ForCausalLM", "qwen": "ForTokenClassification"}
"""The architecture suffix each style's folder must have."""


@dataclass
class Example:
    """One labelled sample: the sample's `prompt`, `answer` and `completion` (what the verifier
    reads), the problem key (held-out sets are cut by problem) and one label per step as the
    verifier splits it (1 good, 0 bad, None unlabelled)."""

    prompt: Any
    answer: Any
    completion: str
    group: str
    labels: list[int | None]

    def sample(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answer": self.answer, "completion": self.completion}


# ------------------------------------------------------------------------------------ the folder


def read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def verifier_options(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The `prm` verifier options that score with the reward model in `folder`."""
    return {
        "backend": "hf",
        "model": str(folder),
        "style": meta["style"],
        "split": SPLIT_OF_KIND[meta["kind"]],
        "final_answer": False,  # the learned model alone: no gold answer at scoring time
        "outcome": "min" if meta["kind"] == "prm" else "last",
        "batch_size": 64,  # sequences per forward pass (the scores do not depend on it)
    }


def verifier_flag(folder: Path, meta: dict[str, Any]) -> str:
    return "prm:" + ",".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in verifier_options(folder, meta).items()
    )


def check_head(folder: Path, style: str, kind: str | None = None) -> dict[str, Any] | None:
    """The folder's meta after checking that its head matches `style` (and `kind`); a one-line
    UserError naming the folder when it does not."""
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{folder}: not a Hugging Face model folder (no config.json)")
    arch = (json.loads(config.read_text(encoding="utf-8")).get("architectures") or [""])[0]
    meta = read_meta(folder)
    if meta is not None and (meta.get("style") != style or (kind and meta.get("kind") != kind)):
        raise UserError(
            f"{folder}: reward model is kind {meta.get('kind')!r} style {meta.get('style')!r}, "
            f"expected kind {kind or meta.get('kind')!r} style {style!r}"
        )
    if meta is not None and not arch.endswith(HEADS[style]):
        raise UserError(f"{folder}: head {arch or 'unknown'} does not match style {style!r} (needs *{HEADS[style]})")
    if meta is None and not arch.endswith("ForCausalLM"):
        raise UserError(f"{folder}: {arch or 'unknown architecture'} is neither a grpo reward model nor a causal LM")
    return meta


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the caller's reporter owns the terminal
    transformers.utils.logging.set_verbosity_error()  # a new head's "newly initialized" report is expected


def build_initial(base: Path, out: Path, *, style: str, kind: str, seed: int) -> None:
    """The starting reward model: the causal LM in `base` with the style's marker token added (its
    embedding the mean of the others) and, for `qwen`, a 2-class head initialised from `seed`. A
    function of (base weights, style, kind, seed): the same folder every time."""
    import transformers

    _quiet_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    marker = STEP_TAG if style == "math_shepherd" else SEPARATOR
    if len(tokenizer.encode(marker, add_special_tokens=False)) != 1:
        tokenizer.add_tokens([marker], special_tokens=style == "qwen")
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        if style == "math_shepherd":
            model = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        else:
            model = transformers.AutoModelForTokenClassification.from_pretrained(
                str(base), num_labels=2, dtype=torch.float32
            )
        old = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                emb = model.get_input_embeddings().weight
                emb[old:] = emb[:old].mean(dim=0)  # deterministic, and a typical input for the model
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {"kind": kind, "style": style, "base": str(base), "seed": seed, "labels": None, "iterations": 0}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


# ------------------------------------------------------------------------------------ labels


def _split(kind: str) -> Any:
    from grpo_verifiers.prm import SPLITS

    return SPLITS[SPLIT_OF_KIND[kind]](STEP_TAG)


def steps_of(completion: str, kind: str) -> list[Any]:
    from grpo_verifiers.prm import split_steps

    return split_steps(completion, _split(kind))


def _example(record: dict[str, Any], labels: list[int | None]) -> Example:
    return Example(
        record.get("prompt"),
        record.get("answer"),
        str(record["completion"]),
        str(record.get("group", record.get("id"))),
        labels,
    )


def labels_from_steps(record: dict[str, Any]) -> list[int | None]:
    """Per line of the completion: 1 when its step reward and every earlier scored one are >= 0.5,
    0 from the first one below on, None for a line with no step reward."""
    by_end = {int(s["end"]): float(s["reward"]) for s in record.get("steps") or []}
    labels: list[int | None] = []
    good = True
    for step in steps_of(str(record["completion"]), "prm"):
        reward = by_end.get(step.end)
        if reward is None:
            labels.append(None)
            continue
        good = good and reward >= 0.5
        labels.append(int(good))
    return labels


def label_records(
    records: list[dict[str, Any]],
    kind: str,
    method: str,
    *,
    gold: Sequence[VerifierConfig],
    threshold: float = 1.0,
    rollout: Callable[[list[dict[str, Any]], list[str]], list[bool]] | None = None,
    source: str = "samples",
) -> list[Example]:
    """Labelled examples from sample records.

    method `steps`: the records' own `steps` (scored samples; a PRM needs them) or, for an ORM, their
    `reward`; `rule`: score them now with the `prm` rule checker (PRM) or the `gold` verifiers (ORM);
    `rollouts`: Math-Shepherd labels, `rollout(records, prefixes)` telling for each (record, prefix)
    whether a continuation from it reaches the right answer.
    """
    from grpo_cli.pipeline.scoring import opened_verifiers, score

    if method == "rule":
        specs = [VerifierConfig(name="prm", options={"split": "line"})] if kind == "prm" else list(gold)
        with opened_verifiers(specs) as verifiers:
            records, _ = score(records, verifiers)
        method = "steps"
    if kind == "orm":
        if method == "rollouts":
            raise UserError("--rollouts labels the steps of a process RM; an ORM's label is the outcome")
        for i, r in enumerate(records):
            if not isinstance(r.get("reward"), (int, float)):
                raise UserError(f"{source} row {i + 1}: an outcome RM needs scored samples (a numeric 'reward')")
        return [_example(r, [int(r["reward"] >= threshold)]) for r in records]
    if method == "steps":
        unscored = next((i for i, r in enumerate(records) if not r.get("steps")), None)
        if unscored is not None and not any(r.get("steps") for r in records):
            raise UserError(
                f"{source} row {unscored + 1}: a process RM needs step rewards ('steps'; score with "
                "--verifier prm) or --rollouts K"
            )
        return [_example(r, labels_from_steps(r)) for r in records]
    assert rollout is not None
    jobs = []  # (record index, step index, prefix)
    for i, r in enumerate(records):
        steps = steps_of(str(r["completion"]), "prm")
        for k, step in enumerate(steps[:-1]):  # the last step's label is the sample's own outcome
            jobs.append((i, k, str(r["completion"])[: step.end] + "\n"))
    reached = rollout([records[i] for i, _, _ in jobs], [p for _, _, p in jobs]) if jobs else []
    out = []
    for r in records:
        n = len(steps_of(str(r["completion"]), "prm"))
        labels: list[int | None] = [None] * n
        if n:
            labels[-1] = int(float(r.get("reward", 0.0)) >= threshold)
        out.append(_example(r, labels))
    for (i, k, _), ok in zip(jobs, reached):
        out[i].labels[k] = int(ok)
    return out


def make_rollout(policy: Any, cfg: Config, gold: Sequence[VerifierConfig], k: int, seed: int) -> Callable:
    """Math-Shepherd's hard estimate with `policy`: K continuations of each prefix, scored by the gold
    verifiers; True when one reaches `threshold`."""
    from grpo_cli.pipeline.sample import render_prompts, sampling_params
    from grpo_cli.pipeline.scoring import opened_verifiers, score

    def rollout(records: list[dict[str, Any]], prefixes: list[str]) -> list[bool]:
        prompts = [p + prefix for p, prefix in zip(render_prompts(records, policy.tokenizer, cfg.data), prefixes)]
        completions = policy.sampler.generate(prompts, sampling_params(cfg, n=k, seed=seed))
        rows = [
            {"prompt": r.get("prompt"), "answer": r.get("answer"), "completion": prefix + c.text}
            for r, prefix, group in zip(records, prefixes, completions)
            for c in group
        ]
        with opened_verifiers(gold) as verifiers:
            scored, _ = score(rows, verifiers)
        hits = [s["reward"] >= cfg.train.advantage.correct_threshold for s in scored]
        return [any(hits[j * k : (j + 1) * k]) for j in range(len(prefixes))]

    return rollout


def held_out_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out): whole problems to the held-out side, a seeded `fraction` of them."""
    groups = sorted({e.group for e in examples})
    random.Random(seed).shuffle(groups)
    cut = set(groups[: max(1, round(fraction * len(groups)))] if fraction > 0 and len(groups) > 1 else [])
    return [e for e in examples if e.group not in cut], [e for e in examples if e.group in cut]


def replay_sample(history: list[Example], fraction: float, rng: random.Random) -> list[Example]:
    """DeepSeekMath's replay: round(fraction x len(history)) examples of earlier iterations, drawn
    without replacement (0.1 x 40 = 4 examples)."""
    return rng.sample(history, round(fraction * len(history))) if history else []


# ------------------------------------------------------------------------------------ the math


def binary_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(score of a random good step > that of a random bad one), ties
    counting a half (Mann-Whitney). NaN when one class is absent. E.g. scores [0.1, 0.4, 0.35, 0.8]
    with labels [0, 0, 1, 1]: of the 4 (good, bad) pairs, (0.35, 0.4) is the only one ordered wrong:
    3/4."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties, 1-based
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if not pos or not neg:
        return math.nan
    return (sum(r for r, y in zip(ranks, labels) if y) - pos * (pos + 1) / 2) / (pos * neg)


def tag_loss(logits: torch.Tensor, labels: torch.Tensor, style: str) -> torch.Tensor:
    """Mean cross-entropy at the labelled tags. logits: [M, 2] at M tags, in the style's class order
    ((+, -) for math_shepherd, (bad, good) for qwen); labels: [M], 1 = good."""
    target = 1 - labels if style == "math_shepherd" else labels  # index of the right class
    return torch.nn.functional.cross_entropy(logits.float(), target.long())


# ------------------------------------------------------------------------------------ the model


class RewardModel:
    """A reward model folder loaded for training: its encoder (the verifier's own input builder),
    the trainable model and an AdamW optimizer."""

    def __init__(self, folder: Path, *, lr: float, threads: int = 0) -> None:
        import transformers
        from grpo_verifiers.prm_hf import HFBackend

        from grpo_cli.training import optim

        _quiet_transformers()
        self.meta = read_meta(folder) or {}
        self.style, self.kind = self.meta["style"], self.meta["kind"]
        self.encoder = HFBackend(model=str(folder), style=self.style)  # tokenizer and marker checks, no weights
        loader = (
            transformers.AutoModelForCausalLM
            if self.style == "math_shepherd"
            else transformers.AutoModelForTokenClassification
        )
        self.model = loader.from_pretrained(str(folder), dtype=torch.float32)
        self.model.train()
        self.optimizer, self.schedule = optim.build(self.model, lr, (0.9, 0.99), 0.0, lambda i: 1.0)

    def encode(self, example: Example) -> tuple[list[int], list[int], list[int]]:
        """(input ids, tag positions, labels) of the labelled tags of one example."""
        from grpo_verifiers.prm_hf import question_text, tag_positions

        steps = [s.text for s in steps_of(example.completion, self.kind)]
        text, spans, special = self.encoder.build_input(question_text(example.sample()), steps)
        enc = self.encoder.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True, verbose=False)
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 1_000_000)
        ids, offsets = list(enc["input_ids"])[:limit], list(enc["offset_mapping"])[:limit]
        positions, labels = [], []
        for pos, label in zip(tag_positions(offsets, spans), example.labels):
            if pos is not None and label is not None:
                positions.append(pos)
                labels.append(label)
        return ids, positions, labels

    def _tag_logits(
        self, ids: torch.Tensor, attn: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """[M, 2] logits at the M tags (rows[m], cols[m])."""
        if self.style == "qwen":
            return self.model(input_ids=ids, attention_mask=attn).logits[rows, cols]
        hidden = self.model.base_model(input_ids=ids, attention_mask=attn).last_hidden_state[rows, cols]  # [M, H]
        pair = self.model.get_output_embeddings().weight[self.encoder.candidate_ids]  # [2, H]: (+, -)
        return hidden @ pair.T

    def train_on(
        self,
        examples: list[Example],
        *,
        epochs: int,
        batch_size: int,
        seed: int,
        start: tuple[int, int] = (0, 0),
        on_update: Callable[[int, int, float], None] | None = None,
    ) -> dict[str, float]:
        """`epochs` passes over `examples`, epoch e in the order seeded by (seed, e), one optimizer
        step per batch; from batch `start` = (epoch, batch index) on, so a resumed run takes the
        same steps. `on_update(epoch, next batch index, loss)` runs after each step (checkpoints)."""
        encoded = [e for e in (self.encode(x) for x in examples) if e[1]]
        losses: list[float] = []
        pad = self.encoder.tokenizer.pad_token_id or 0
        for epoch in range(start[0], epochs):
            order = list(range(len(encoded)))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            batches = range(0, len(order), batch_size)
            for b_index, at in enumerate(batches):
                if (epoch, b_index) < start:
                    continue
                chunk = [encoded[i] for i in order[at : at + batch_size]]
                with torch.random.fork_rng(devices=[]):  # dropout (qwen's head) drawn per update: resumable
                    torch.manual_seed((seed * 1_000_003 + epoch) * 1_009 + b_index)
                    losses.append(self._update(chunk, pad))
                if on_update is not None:
                    on_update(epoch, b_index + 1, losses[-1])
        return {
            "loss": sum(losses) / len(losses) if losses else math.nan,
            "updates": float(len(losses)),
            "examples": float(len(encoded)),
        }

    def _update(self, chunk: list[tuple[list[int], list[int], list[int]]], pad: int) -> float:
        """One optimizer step on a batch of encoded examples; its loss."""
        width = max(len(ids) for ids, _, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # [B, S], right-padded
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        rows, cols, labels = [], [], []
        for b, (seq, pos, lab) in enumerate(chunk):
            ids[b, : len(seq)] = torch.tensor(seq)
            attn[b, : len(seq)] = 1
            rows += [b] * len(pos)
            cols += pos
            labels += lab
        logits = self._tag_logits(ids, attn, torch.tensor(rows), torch.tensor(cols))  # [M, 2]
        loss = tag_loss(logits, torch.tensor(labels), self.style)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return float(loss.detach())

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def save(self, folder: Path, **meta: Any) -> None:
        """The folder the verifier reads: weights, tokenizer and reward_model.json, each file replaced
        atomically (other contents of the folder, e.g. checkpoints/, are left alone)."""
        import os

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        self.encoder.tokenizer.save_pretrained(tmp)
        self.meta.update(meta)
        (tmp / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n", encoding="utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        for path in tmp.iterdir():
            os.replace(path, folder / path.name)
        tmp.rmdir()


def evaluate_folder(folder: Path, examples: list[Example]) -> dict[str, float]:
    """Held-out figures of the reward model in `folder`, scored through the `prm` verifier itself:
    step accuracy at 0.5, the majority-label baseline accuracy, AUC, and the count of labelled steps."""
    from grpo_cli.plugins import load_verifier

    meta = read_meta(folder) or {}
    verifier = load_verifier("prm", verifier_options(folder, meta))
    try:
        verdicts = verifier.verify([e.sample() for e in examples])
    finally:
        verifier.close()
    scores, labels = [], []
    for e, verdict in zip(examples, verdicts):
        by_end = {int(s["end"]): float(s["reward"]) for s in verdict.steps or []}
        for step, label in zip(steps_of(e.completion, meta["kind"]), e.labels):
            if label is not None and step.end in by_end:
                scores.append(by_end[step.end])
                labels.append(label)
    if not labels:
        return {"steps": 0.0}
    good = sum(labels) / len(labels)
    return {
        "steps": float(len(labels)),
        "accuracy": sum((s >= 0.5) == bool(y) for s, y in zip(scores, labels)) / len(labels),
        "majority": max(good, 1 - good),
        "auc": binary_auc(scores, labels),
    }


def examples_to_state(examples: list[Example]) -> list[dict[str, Any]]:
    return [asdict(e) for e in examples]


def examples_from_state(rows: list[dict[str, Any]]) -> list[Example]:
    return [Example(**row) for row in rows]


# ------------------------------------------------------------------------------------ bootstrap


def bootstrap_reward_model(cfg: Config, out: Path, report: Reporter) -> dict[str, Any]:
    """The starting RM of Algorithm 1 on a task with a rule checker: built from the policy's base
    model (`model.path`), trained on its samples of `reward_model.bootstrap_prompts` training prompts
    labelled by the rule (`reward_model.labels`). Reproducible for a seed; returns the held-out figures."""
    from grpo_cli.models.loading import resolve_model_dir
    from grpo_cli.pipeline.sample import load_policy, problems_from, sample_problems, sampling_params

    rm = cfg.train.reward_model
    base = resolve_model_dir(cfg.model.path)
    policy = load_policy(cfg)
    problems = problems_from(cfg.data.train, cfg.data)[: rm.bootstrap_prompts]
    records = sample_problems(policy, problems, cfg, sampling_params(cfg, seed=cfg.seed + 7), report, logprobs=False)
    rollout = make_rollout(policy, cfg, cfg.verifiers, rm.rollouts, cfg.seed) if rm.labels == "rollouts" else None
    examples = label_records(records, rm.kind, rm.labels, gold=cfg.verifiers, rollout=rollout)
    return train_reward_model(base, out, examples, cfg, report)


def train_from_samples(
    samples: Path,
    out: Path,
    cfg: Config,
    report: Reporter,
    *,
    base: str,
    labels: str,
    held_out: float,
    save_every: int,
    resume: bool,
) -> dict[str, Any]:
    """`grpo rm train`: label the samples file's records (`steps`, `rule` or `rollouts` with the
    configured model), then `train_reward_model` from `base` (`tiny`, a causal LM or an RM folder)."""
    from grpo_cli.models.loading import resolve_model_dir
    from grpo_cli.pipeline.data import read_jsonl

    rm = cfg.train.reward_model
    records = read_jsonl(samples)
    for i, row in enumerate(records):
        if not isinstance(row.get("completion"), str):
            raise UserError(
                f"{samples} line {i + 1}: missing field 'completion' (samples from `grpo sample`/`grpo score`)"
            )
    rollout = None
    if labels == "rollouts":
        from grpo_cli.pipeline.sample import load_policy

        rollout = make_rollout(load_policy(cfg), cfg, cfg.verifiers, rm.rollouts, cfg.seed)
        if any(not isinstance(r.get("reward"), (int, float)) for r in records):
            from grpo_cli.pipeline.scoring import opened_verifiers, score

            with opened_verifiers(cfg.verifiers) as gold:
                records, _ = score(records, gold)
    examples = label_records(
        records,
        rm.kind,
        labels,
        gold=cfg.verifiers,
        threshold=cfg.train.advantage.correct_threshold,
        rollout=rollout,
        source=str(samples),
    )
    return train_reward_model(
        resolve_model_dir(base), out, examples, cfg, report, held_out=held_out, save_every=save_every, resume=resume
    )


def train_reward_model(
    base: Path,
    out: Path,
    examples: list[Example],
    cfg: Config,
    report: Reporter,
    *,
    held_out: float = 0.1,
    save_every: int = 0,
    resume: bool = False,
) -> dict[str, Any]:
    """Build (from a causal LM) or continue (a reward model folder) an RM in `out` and train it on
    `examples`, a seeded `held_out` fraction of the problems kept aside; figures before and after go
    to `out/eval.json`, one row per update to `out/metrics.jsonl`. With `save_every`, a checkpoint
    every N updates in `out/checkpoints/` (model + optimizer + position), from which `resume`
    continues to the same weights an uninterrupted run ends with."""
    rm = cfg.train.reward_model
    train_set, test_set = held_out_split(examples, held_out, cfg.seed)
    folder, before, state = _start_folder(base, out, test_set, cfg, report, resume=resume)
    model = RewardModel(folder, lr=rm.lr)
    updates = 0
    if state:
        model.load_state(state)
        updates = state["updates"]
        _truncate_rows(out / "metrics.jsonl", updates)

    def on_update(epoch: int, batch: int, loss: float) -> None:
        nonlocal updates
        updates += 1
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"update": updates, "epoch": epoch, "loss": loss}) + "\n")
        if save_every and updates % save_every == 0:
            ckpt = out / "checkpoints" / f"step-{updates:06d}"
            model.save(ckpt)
            torch.save(
                {**model.state(), "epoch": epoch, "batch": batch, "updates": updates, "before": before},
                ckpt / "rm_state.pt.tmp",
            )
            (ckpt / "rm_state.pt.tmp").rename(ckpt / "rm_state.pt")  # its presence marks a complete checkpoint

    start = (state["epoch"], state["batch"]) if state else (0, 0)
    stats = model.train_on(
        train_set, epochs=rm.epochs, batch_size=rm.batch_size, seed=cfg.seed, start=start, on_update=on_update
    )
    model.save(out, labels=rm.labels)
    after = evaluate_folder(out, test_set) if test_set else {}
    result = {
        "kind": rm.kind,
        "style": rm.style,
        "train_examples": len(train_set),
        "held_out_examples": len(test_set),
        "updates": updates,
        "before": before,
        "after": after,
        "verifier": verifier_flag(out, read_meta(out) or {}),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report.log(f"reward model {out}: {stats}")
    return result


def _start_folder(
    base: Path, out: Path, test_set: list[Example], cfg: Config, report: Reporter, *, resume: bool
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The folder training starts from, the before-figures and the saved state ({} when fresh): the
    last checkpoint of `out` when resuming, else `out` made from `base` (built, or copied)."""
    rm = cfg.train.reward_model
    checkpoints = sorted((out / "checkpoints").glob("step-*")) if resume else []
    checkpoints = [c for c in checkpoints if (c / "rm_state.pt").is_file()]
    if resume and not checkpoints:
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if checkpoints:
        state = torch.load(checkpoints[-1] / "rm_state.pt", weights_only=False)
        report.log(f"resuming from {checkpoints[-1]} after {state['updates']} updates")
        return checkpoints[-1], state["before"], state
    meta = check_head(base, rm.style, rm.kind)
    if meta is None:
        build_initial(base, out, style=rm.style, kind=rm.kind, seed=cfg.seed)
    elif base.resolve() != out.resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    return out, (evaluate_folder(out, test_set) if test_set else {}), {}


def _truncate_rows(path: Path, keep: int) -> None:
    if path.exists():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = []
        for line in rows:
            try:
                if json.loads(line)["update"] <= keep:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):  # a line cut by a kill
                continue
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
