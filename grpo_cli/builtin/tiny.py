"""Build the tiny model the project ships (docs/design.md, "Embedded default"), reproducibly.

A byte-level tokenizer with no merges (one token per byte, so one per character for ASCII) and a
~1M-parameter Qwen2 causal LM, trained by supervised next-token prediction on the `arith` train
split, `"{prompt}\n"` followed by `"{solution}<eos>"`, with the loss on the solution and eos only.
Training runs a fixed number of steps from a fixed seed, so a build is a function of its arguments
and the thread count. It stops early on purpose: the model is right sometimes, not always, which
leaves GRPO room to improve it.

Tokenizer note: transformers 5.x loads a folder whose `config.json` says `qwen2` with
`Qwen2Tokenizer` whatever `tokenizer_config.json` names (qwen2 is on its list of models with an
"incorrect" hub tokenizer class), and that class applies byte-level pre-tokenization and decoding.
A plain character vocabulary then loses spaces and newlines. The vocabulary here is therefore written
in the byte-level alphabet (space is `Ġ`, newline `Ċ`), so `Qwen2Tokenizer`,
`PreTrainedTokenizerFast` and the raw `tokenizers` file all give the same ids: token id = byte + 3.

torch and transformers are imported inside functions: only `grpo model build-tiny` needs them.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grpo_cli.builtin import arith

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
"""Ids 0, 1, 2; byte b has id b + 3."""
MAX_LENGTH = 256

MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "tie_word_embeddings": True,
}

DEFAULT_STEPS = 1500
"""Stops inside the target band. Measured on the test split, mean of 8 samples at T=1 (greedy):
1000 steps 12% (12%), 1500 steps 34% (43%), 2500 steps 68% (79%); seed 0, 2 threads."""
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3
WARMUP_FRACTION = 0.05
MIN_LR_FRACTION = 0.1

_ANSWER_LINE = re.compile(r"^####\s*(-?\d+)\s*$", re.MULTILINE)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (space -> 'Ġ', newline -> 'Ċ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer():
    """The byte-level, merge-free tokenizer as a `PreTrainedTokenizerFast` (eos, pad and unk set)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for b, char in _bytes_to_unicode().items():
        vocab[char] = len(SPECIAL_TOKENS) + b
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    """`tokenizer.json` + `tokenizer_config.json` naming `PreTrainedTokenizerFast`, no chat template."""
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_config(tokenizer):
    """The Qwen2 config of the tiny model for `tokenizer` (fp32, tied embeddings)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SHAPE,
    )


@contextmanager
def _torch_threads(threads: int | None):
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_examples(tokenizer, problems: list[dict]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + "\n" + solution + eos, number of prompt tokens) per problem."""
    prompts = tokenizer([p["prompt"] + "\n" for p in problems], add_special_tokens=False)["input_ids"]
    solutions = tokenizer([p["solution"] for p in problems], add_special_tokens=False)["input_ids"]
    return [(p + s + [tokenizer.eos_token_id], len(p)) for p, s in zip(prompts, solutions)]


def _batch(examples: list[tuple[list[int], int]], pad_id: int):
    """Right-padded input ids [B, L] and labels [B, L] (-100 on the prompt and padding)."""
    import torch

    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = input_ids[row, n_prompt : len(ids)]
    return input_ids, labels


def _epoch_batches(examples: list[tuple[list[int], int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of index batches, each of similar lengths (less padding), in random order.

    Shuffle, sort windows of 32 batches by length, cut them into batches, shuffle the batches.
    """
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warmup over the first 5% of steps, then cosine decay to 10% of `lr`."""
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the tiny model on the default `arith` train split and save it in `out_dir`.

    `seed` sets the initial weights and the data order; the data is always the default split
    (`arith.load_split("train")`), so `arith.load_split("test")` stays held out. Writes the model
    (safetensors), `generation_config.json`, the tokenizer files and `build.json` (arguments,
    parameter count, train time, final loss). Returns the same statistics as `build.json`.
    """
    import torch
    import transformers
    from transformers import GenerationConfig, Qwen2ForCausalLM

    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _torch_threads(threads):
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        model = Qwen2ForCausalLM(model_config(tokenizer))
        n_params = sum(p.numel() for p in model.parameters())
        log(f"tiny model: {n_params:,} parameters")

        examples = _encode_examples(tokenizer, arith.load_split("train"))
        order_rng = random.Random(seed)
        batches: list[list[int]] = []
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
        model.train()
        losses: list[float] = []
        start = time.perf_counter()
        for step in range(steps):
            if not batches:
                batches = _epoch_batches(examples, batch_size, order_rng)
            input_ids, labels = _batch([examples[i] for i in batches.pop()], tokenizer.pad_token_id)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr)
            # Right padding needs no attention mask: padding comes after every real token.
            loss = model(input_ids=input_ids, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % 25 == 0 or step + 1 == steps:
                recent = losses[-25:]
                log(
                    f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                    f"lr {_lr_at(step, steps, lr):.2e}  {time.perf_counter() - start:.0f}s"
                )
        train_seconds = time.perf_counter() - start

        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model.save_pretrained(out_dir)
        save_tokenizer(tokenizer, out_dir)
        for path in out_dir.iterdir():
            path.chmod(0o644)  # save_pretrained writes the weights owner-only; they ship in the package

    tail = losses[-25:]
    stats = {
        "command": "grpo model build-tiny",
        "args": {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "threads": threads},
        "data": {
            "task": "grpo_cli.builtin.arith",
            "split_seed": arith.DEFAULT_SEED,
            "n_train": len(examples),
            "operands": [arith.MIN_OPERANDS, arith.MAX_OPERANDS],
            "operand_max": arith.OPERAND_MAX,
            "factor_max": arith.FACTOR_MAX,
        },
        "model": {"architecture": "Qwen2ForCausalLM", "vocab_size": len(tokenizer), **MODEL_SHAPE},
        "params": n_params,
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(sum(tail) / max(1, len(tail)), 5) if tail else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out_dir / "build.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"saved to {out_dir}  ({train_seconds:.0f}s training, final loss {stats['final_loss']})")
    return stats


def extract_answer(completion: str) -> str | None:
    """The integer on the first `#### N` line of `completion`, or None."""
    match = _ANSWER_LINE.search(completion)
    return match.group(1) if match else None


def quick_accuracy(
    model_dir: Path,
    problems: list[dict],
    temperature: float = 1.0,
    n: int = 8,
    seed: int = 0,
    threads: int | None = None,
    *,
    batch_size: int = 64,
    max_new_tokens: int = 96,
) -> float:
    """Mean correctness of `n` samples per problem (greedy when `temperature` is 0).

    Plain `model.generate` with left padding; for tuning and reporting the build only.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _torch_threads(threads):
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        greedy = temperature == 0
        samples = 1 if greedy else n
        correct = total = 0
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            enc = tokenizer([p["prompt"] + "\n" for p in chunk], return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=not greedy,
                    temperature=None if greedy else temperature,
                    top_k=None if greedy else 0,
                    top_p=None if greedy else 1.0,
                    num_return_sequences=samples,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in enumerate(texts):
                correct += extract_answer(text) == chunk[i // samples]["answer"]
                total += 1
    return correct / max(1, total)
