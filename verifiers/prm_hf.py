"""The `prm` verifier's `hf` backend: a Hugging Face process reward model scores each step.

Two model shapes (`style`):

- `math_shepherd` (Math-Shepherd, arXiv 2312.08935): a causal LM. The input is
  `"{question} {step 1} {tag}\\n{step 2} {tag}..."`; the logits at each tag token, restricted to the
  `good_token` and `bad_token` ids, go through a softmax, and the step score is the `good_token`
  probability: `exp(l+) / (exp(l+) + exp(l-))`. Loaded with `AutoModelForCausalLM`.
- `qwen` (Qwen2.5-Math-PRM): a 2-class head on every token. The input is the question and the steps,
  each followed by the `separator` token (`<extra_0>`), rendered with the tokenizer's chat template
  (system prompt, user question, assistant steps) when it has one, else `"{question}\\n{steps}"`. The
  step score is `softmax(logits)[label]` at each separator (`label` 1 by default). Loaded with
  `AutoModelForTokenClassification` (a checkpoint saved with `num_labels=2`, e.g.
  `Qwen2ForTokenClassification`, loads offline with no remote code). Qwen's released checkpoint
  (`Qwen2ForProcessRewardModel`) ships its own modeling code: `trust_remote_code: true` loads it with
  `AutoModel`, and any model whose forward returns `[batch, tokens, 2]` logits (as `.logits` or the
  first output) works the same way.

Usage (options after `prm:`; `final_answer=false` leaves the gold-answer check out):

    grpo score samples.jsonl --verifier prm:backend=hf,model=PATH,split=tag,final_answer=false
    grpo score samples.jsonl --verifier prm:backend=hf,style=qwen,model=PATH,split=blank_line,trust_remote_code=true
    grpo train --set train.advantage.kind=process --set 'verifiers=[{name: prm, options: {backend: hf, model: PATH}}]'

Where a tag sits is known by construction: the input text is built here, and the token holding each
inserted tag is found through the fast tokenizer's character offsets, so a step whose own text
happens to contain the tag, or a tokenizer that merges the tag with the space before it, cannot
shift the scores. An input longer than `max_length` tokens is cut on the right; steps whose tag was
cut get no score (`info["truncated"]` counts them).

The tokenizer loads (and the tokens are checked) when the verifier is built; the weights load once,
on the first batch, onto `device` in `dtype`, and `close()` releases them. Forward passes run in
`batch_size` chunks, right-padded, under `torch.inference_mode`: with causal attention, padding on
the right does not change the real tokens' logits, so the batch size does not change the scores.

A public module: `grpo_cli.training.reward_model` trains reward models through the same
`HFBackend`, `question_text` and `tag_positions`, so what was trained is what scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpo_verifiers._steps import StepScores

STYLES = ("math_shepherd", "qwen")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt Qwen2.5-Math-PRM's model card uses."""


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def question_text(sample: dict[str, Any]) -> str:
    """The problem statement: the prompt string, or the last user message of a chat prompt."""
    prompt = sample.get("prompt", "")
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return "" if prompt is None else str(prompt)


def tag_positions(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each character span `[start, end)`, the index of the last token overlapping it (None when
    no token does, e.g. it was truncated away). `offsets` are the tokens' `[start, end)` spans."""
    positions: list[int | None] = []
    k = 0
    for start, end in spans:  # spans are in increasing order, so one pass over the tokens
        found = None
        while k < len(offsets) and offsets[k][0] < end:
            if offsets[k][1] > start:
                found = k
            k += 1
        positions.append(found)
    return positions


class HFBackend:
    """Scores steps with a Hugging Face process reward model (module docstring).

    model: a local model folder (or a hub id where the network allows it).
    style: `math_shepherd` (default) or `qwen`.
    step_tag, good_token, bad_token: Math-Shepherd's tag (`ки`) and its `+`/`-` tokens.
    separator, label, system_prompt: Qwen-style separator (`<extra_0>`), the class read as "good"
        (1), and the system prompt used with a chat template.
    batch_size: sequences per forward pass (8). device: `auto` (cuda if available), `cpu`, `cuda:N`.
    dtype: `auto` (the checkpoint's), `float32`, `bfloat16`, `float16`.
    max_length: longest input in tokens (0: the model's `max_position_embeddings`).
    trust_remote_code: load a checkpoint that ships its own modeling code (qwen style; off by default).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        style: str = "math_shepherd",
        step_tag: str = "ки",
        good_token: str = "+",
        bad_token: str = "-",
        separator: str = "<extra_0>",
        label: int = 1,
        system_prompt: str = QWEN_SYSTEM,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 0,
        trust_remote_code: bool = False,
        timeout: float = 0.0,
        workers: int = 1,
        memory_mb: int = 0,
    ) -> None:
        del timeout, workers, memory_mb  # the verifier's bounds for sympy; a forward pass is not bounded
        if not model or not isinstance(model, str):
            raise ValueError("backend=hf needs model=PATH (a Hugging Face process reward model folder)")
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if int(batch_size) < 1 or int(max_length) < 0 or int(label) not in (0, 1):
            raise ValueError("batch_size must be >= 1, max_length >= 0 and label 0 or 1")
        if not isinstance(trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be true or false, got {trust_remote_code!r}")
        self.model_path, self.style, self.label = model, style, int(label)
        self.step_tag, self.separator, self.system_prompt = step_tag, separator, system_prompt
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.device_option, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code
        # A hub id is `name` or `org/name`; anything else (or an existing path) is a local folder.
        looks_local = Path(model).expanduser().exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model)
        if looks_local:
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
                raise ValueError(
                    f"prm model {model!r} is a LoRA adapter: merge it into its base first "
                    f"(grpo model merge {model} --out DIR) and pass model=DIR"
                )
            if not (folder / "config.json").is_file():
                raise ValueError(f"prm model {model!r}: no such Hugging Face model folder (no config.json there)")
            self.model_path = str(Path(model).expanduser())
        self.tokenizer = self._load_tokenizer()
        marker = step_tag if style == "math_shepherd" else separator
        self.marker_id = self._single_token(marker, "step_tag" if style == "math_shepherd" else "separator")
        if style == "math_shepherd":
            self.candidate_ids = [
                self._single_token(good_token, "good_token"),
                self._single_token(bad_token, "bad_token"),
            ]
        self._model: Any = None
        self._device: str | None = None

    # ---------------------------------------------------------------- loading

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
        except Exception as exc:  # transformers raises many kinds, with multi-line messages
            raise ValueError(f"prm model {self.model_path!r}: cannot load its tokenizer ({_one_line(exc)})") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"prm model {self.model_path!r}: needs a fast tokenizer (tokenizer.json) for character offsets"
            )
        return tokenizer

    def _single_token(self, text: str, option: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False) if isinstance(text, str) and text else []
        if len(ids) != 1:
            raise ValueError(f"{option} {text!r} is not a single token of {self.model_path}'s tokenizer (ids {ids})")
        return ids[0]

    def _load_model(self) -> Any:
        """The weights, loaded on first use; a failure is remembered so it is not retried each batch."""
        if isinstance(self._model, Exception):
            raise self._model
        if self._model is not None:
            return self._model
        import torch
        import transformers

        device = self.device_option
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.style == "math_shepherd":
            loader = transformers.AutoModelForCausalLM
        elif self.trust_remote_code:
            loader = transformers.AutoModel
        else:
            loader = transformers.AutoModelForTokenClassification
        dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        transformers.utils.logging.disable_progress_bar()  # the caller's reporter owns the terminal
        try:
            model = loader.from_pretrained(self.model_path, dtype=dtype, trust_remote_code=self.trust_remote_code)
            model.to(device).eval().requires_grad_(False)
        except Exception as exc:
            self._model = RuntimeError(
                f"prm model {self.model_path!r}: cannot load it with {loader.__name__} ({_one_line(exc)})"
            )
            raise self._model from None
        self._model, self._device = model, device
        return model

    def _limit(self, model: Any) -> int:
        if self.max_length:
            return self.max_length
        return int(getattr(model.config, "max_position_embeddings", 0) or 1_000_000)

    # ---------------------------------------------------------------- inputs

    def build_input(self, question: str, steps: Sequence[str]) -> tuple[str, list[tuple[int, int]], bool]:
        """The model's input text, the character span of each step's tag or separator in it, and
        whether the tokenizer should add its special tokens (not when a chat template did)."""
        if self.style == "math_shepherd":
            text, spans = f"{question} ", []
            for k, step in enumerate(steps):
                text += ("\n" if k else "") + f"{step} "
                spans.append((len(text), len(text) + len(self.step_tag)))
                text += self.step_tag
            return text, spans, True
        body, spans = "", []
        for step in steps:
            body += step
            spans.append((len(body), len(body) + len(self.separator)))
            body += self.separator
        if getattr(self.tokenizer, "chat_template", None):
            messages = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": question},
                {"role": "assistant", "content": body},
            ]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            base = text.rfind(body)
            if base < 0:
                raise ValueError("the chat template does not keep the assistant's text verbatim")
            return text, [(base + a, base + b) for a, b in spans], False
        prefix = f"{question}\n"
        return prefix + body, [(len(prefix) + a, len(prefix) + b) for a, b in spans], True

    # ---------------------------------------------------------------- scoring

    def score(self, samples: Sequence[dict[str, Any]], steps: Sequence[list[Any]]) -> list[StepScores]:
        results = [StepScores([], {}) for _ in samples]
        encoded: list[tuple[int, list[int], list[int | None]]] = []  # (sample, ids, tag positions)
        todo = [i for i, sample_steps in enumerate(steps) if sample_steps]
        if not todo:
            return results
        model = self._load_model()
        limit = self._limit(model)
        for i in todo:
            text, spans, special = self.build_input(question_text(samples[i]), [s.text for s in steps[i]])
            enc = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True, verbose=False)
            ids, offsets = list(enc["input_ids"])[:limit], list(enc["offset_mapping"])[:limit]
            positions = tag_positions(offsets, spans)
            if any(p is None for p in positions):
                results[i].info["truncated"] = sum(p is None for p in positions)
            encoded.append((i, ids, positions))
        encoded.sort(key=lambda item: len(item[1]))  # similar lengths share a batch: less padding
        for chunk_start in range(0, len(encoded), self.batch_size):
            chunk = encoded[chunk_start : chunk_start + self.batch_size]
            probs = self._forward(model, [ids for _, ids, _ in chunk])  # [B, T] score of every token
            for row, (i, _, positions) in enumerate(chunk):
                results[i].rewards = [None if p is None else float(probs[row, p]) for p in positions]
        return results

    def _forward(self, model: Any, batch: list[list[int]]) -> Any:
        """The step score each token position would give: [B, T] on the CPU, float32."""
        import torch

        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            out = model(input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device))
            logits = out.logits if hasattr(out, "logits") else out[0]  # [B, T, V] or [B, T, 2]
            if self.style == "math_shepherd":
                pair = logits[..., self.candidate_ids].float()  # [B, T, 2]: (+, -)
                return pair.softmax(dim=-1)[..., 0].cpu()
            if logits.dim() != 3 or logits.shape[-1] != 2:
                raise ValueError(
                    f"prm model {self.model_path!r}: expected [batch, tokens, 2] logits, got {tuple(logits.shape)}"
                )
            return logits.float().softmax(dim=-1)[..., self.label].cpu()

    def close(self) -> None:
        if self._model is None or isinstance(self._model, Exception):
            self._model = None
            return
        device, self._model = self._device, None
        if device and device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
