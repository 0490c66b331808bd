"""Sampling with vLLM: an in-process engine colocated with training, its weights reloaded in place
after every optimizer step.

Log-probs are vLLM's `processed_logprobs`: the log-softmax of logits / temperature (of the raw
logits when greedy), the same distribution the transformers backend records, as long as top_p is
1. With top_p < 1 vLLM renormalises over the nucleus, so each of its log-probs exceeds the
transformers backend's by log(1 / nucleus mass), at most log(1 / top_p).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from tqdm import tqdm

from grpo_cli.errors import UserError
from grpo_cli.sampling.base import Completion, Sampler, SamplingParams
from grpo_cli.sampling.hf import encode_prompts, stream_seed

INSTALL_HINT = "pip install 'grpo-cli[vllm]' on GPU, or the CPU build as the README's vLLM section shows"


def import_vllm() -> Any:
    """The vllm module, or a one-line UserError saying how to install it."""
    # One process: the engine lives beside the trainer, so weights reach it as tensors, not pickles.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # our progress bars, not its log lines
    try:
        import vllm
    except ImportError as e:
        raise UserError(f"sampling.backend=vllm but vLLM is not installed ({e}); {INSTALL_HINT}") from None
    return vllm


def engine_kwargs(model: Any, batch_size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Arguments of `vllm.LLM` for `model`: our defaults, then `sampling.vllm_kwargs` on top."""
    import torch

    config = model.config
    max_len = getattr(config, "max_position_embeddings", None)
    kwargs: dict[str, Any] = {
        "model": str(model.name_or_path),
        "dtype": str(model.dtype).removeprefix("torch."),
        "skip_tokenizer_init": True,  # token ids in and out; the trainer's tokenizer does the text
        "logprobs_mode": "processed_logprobs",  # after temperature, as the transformers backend
        "max_num_seqs": batch_size,
        "seed": 0,  # every request carries its own seed
        "use_tqdm_on_load": False,  # our progress bars only
    }
    if max_len:
        kwargs["max_model_len"] = max_len
    if torch.cuda.is_available():
        # Colocated with training: leave most of the GPU to the policy, its gradients and Adam.
        kwargs["gpu_memory_utilization"] = 0.3
    else:
        # CUDA graphs and torch.compile don't apply on CPU; size the KV cache for one full batch
        # (within 64 MiB..4 GiB; vLLM queues what does not fit) instead of a share of the memory.
        kwargs["enforce_eager"] = True
        layers = config.num_hidden_layers
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_token = 2 * layers * kv_heads * head_dim * model.dtype.itemsize
        kwargs["kv_cache_memory_bytes"] = min(max(per_token * batch_size * (max_len or 2048), 64 << 20), 4 << 30)
    kwargs.update(overrides)
    return kwargs


class VLLMSampler(Sampler):
    """Generates all prompts x n in one vLLM call; `sync_weights` copies the policy into the engine."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_ids: set[int],
        batch_size: int = 256,
        vllm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        vllm = import_vllm()
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.stop_ids = sorted(stop_ids)
        kwargs = engine_kwargs(model, batch_size, vllm_kwargs or {})
        self.max_positions = kwargs.get("max_model_len")
        self.llm = _create_engine(vllm, kwargs)

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        progress: Callable[[int], None] = lambda n: None,
    ) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        encoded = encode_prompts(self.tokenizer, prompts, params.max_new_tokens, self.max_positions, "the engine's")
        # One request per sequence, copy j of prompt i seeded with the transformers backend's stream
        # seed: each draws from its own generator, so the result depends neither on batching nor on
        # how prompts are shared among ranks (and greedy allows n = 1 only).
        requests = [
            self.vllm.SamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=stream_seed(params.seed, params.prompt_offset + i, j),
                stop_token_ids=self.stop_ids,
                ignore_eos=True,  # stop on our stop ids only, as the transformers backend does
                logprobs=0,  # the chosen token's log-prob only
                detokenize=False,
            )
            for i in range(len(prompts))
            for j in range(params.n)
        ]
        inputs = [TokensPrompt(prompt_token_ids=ids) for ids in encoded for _ in range(params.n)]
        outputs = self.llm.generate(inputs, requests, use_tqdm=partial(_Progress, callback=progress))
        results: list[list[Completion]] = [[] for _ in prompts]
        for k, out in enumerate(outputs):  # in request order
            i = k // params.n
            seq = out.outputs[0]
            tokens = list(seq.token_ids)
            logps = [float(seq.logprobs[pos][t].logprob) for pos, t in enumerate(tokens)]
            text = self.tokenizer.decode([t for t in tokens if t not in self.stop_ids], skip_special_tokens=True)
            results[i].append(
                Completion(text, encoded[i], tokens, logps, "stop" if seq.finish_reason == "stop" else "length")
            )
        return results

    def sync_weights(self, model: Any) -> None:
        """Load `model`'s current weights into the engine in place, then drop the KV blocks that the
        prefix cache computed with the old ones."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": _weights(model)})
        self.llm.reset_prefix_cache()


def _create_engine(vllm: Any, kwargs: dict[str, Any]) -> Any:
    """`vllm.LLM(**kwargs)`, leaving the process's RNGs and torch thread setting as they were."""
    import random

    import numpy as np
    import torch

    # In-process, vLLM seeds the global RNGs (torch, numpy, random) with the engine seed, and its
    # CPU worker disables torch.set_num_threads for the process (it expects to have bound OpenMP
    # threads itself, which it does only in its own worker process): undo both for the trainer.
    set_num_threads = torch.set_num_threads
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            return vllm.LLM(**kwargs)
    except TypeError as e:  # an unknown key in sampling.vllm_kwargs
        raise UserError(f"config: sampling.vllm_kwargs: {e}") from None
    finally:
        torch.set_num_threads = set_num_threads
        random.setstate(py_state)
        np.random.set_state(np_state)


def _weights(model: Any) -> Iterator[tuple[str, Any]]:
    from grpo_cli.models.lora import merged_state_dict

    state = merged_state_dict(model)  # LoRA: the adapters folded in, under the base model's names
    yield from ((name, tensor.detach()) for name, tensor in state.items())
    if "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings", False):
        # Tied embeddings: name the output projection too, for engines that hold it separately.
        yield "lm_head.weight", model.get_output_embeddings().weight.detach()


class _Progress(tqdm):
    """vLLM's progress bar, drawn nowhere: it forwards the count of finished sequences."""

    def __init__(self, *args: Any, callback: Callable[[int], None], **kwargs: Any) -> None:
        self.callback = callback
        super().__init__(*args, file=io.StringIO(), **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        self.callback(int(n or 0))
        return super().update(n)
