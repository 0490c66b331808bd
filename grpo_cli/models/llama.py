"""grpo's own implementation of the Llama-family decoder (Llama, Qwen2, Qwen3, Mistral).

Why: importing transformers' modeling code pulls in torch._dynamo and sympy (about 90 MB of
resident memory before any weight is loaded), and its per-call work (mask builders, kwargs
plumbing, output classes) is most of a decode step's time on a small model. This module is the
same architecture in plain torch: the same parameter names (checkpoints, vLLM weight sync and
FSDP see no difference), the same arithmetic (tests compare logits, gradients and samples against
transformers), and the subset of the transformers call interface grpo uses (`forward` with
`attention_mask`, `position_ids`, `cache` (or its older name `past_key_values`), `inputs_embeds`,
`logits_to_keep`;
`base_model`, `get_input_embeddings`, `save_pretrained`, `gradient_checkpointing_enable`).

`unsupported(...)` names why a model folder needs transformers instead (another architecture,
sliding-window layers, a position-dependent RoPE variant, weights not in safetensors, ...);
`model.impl: auto` then loads it with transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
"""RoPE variants whose frequencies depend on the position alone (not on the sequence's length)."""
_IGNORED_KEYS = ("rotary_emb.inv_freq",)
"""Buffers some older checkpoints store; recomputed here."""


@dataclass
class Output:
    """What the callers read from a transformers model's output."""

    last_hidden_state: Tensor | None = None
    logits: Tensor | None = None
    cache: Any = None


def _rope_parameters(config: Any) -> dict[str, Any]:
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def unsupported(config: Any, model_dir: Path) -> str | None:
    """Why this model can't run on the native implementation, or None when it can."""
    reason = unsupported_architecture(config)
    if reason is None and getattr(config, "quantization_config", None) is not None:
        reason = "quantized weights"
    if reason is None and not _weight_files(model_dir):
        reason = "weights not in safetensors (model.safetensors or its index)"
    return reason


def unsupported_architecture(config: Any) -> str | None:
    """Why this config is not the standard Llama-family decoder (full causal attention, RoPE from
    the position alone, SiLU MLP), or None when it is."""
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"model_type {model_type!r} (native: {', '.join(sorted(MODEL_TYPES))})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} (native: silu)"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return "sliding-window attention layers"
    if (
        layer_types is None
        and getattr(config, "sliding_window", None) is not None
        and getattr(config, "use_sliding_window", True)
    ):
        return "sliding-window attention"
    rope_type = _rope_parameters(config).get("rope_type", _rope_parameters(config).get("type", "default"))
    if rope_type not in ROPE_TYPES:
        return f"RoPE type {rope_type!r} (native: {', '.join(sorted(ROPE_TYPES))})"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    return None


def _weight_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    return []


# ------------------------------------------------------------------------------------- modules


class Packing:
    """Layout of a forward pass over prompts shared by several rows (grpo_cli.perf.shared_prefix), run
    as one token sequence: `u` right-padded prefixes of width `w`, then `r` right-padded
    completion rows of width `c`. Token-wise work (projections, MLP, norms) runs once over all of
    them; in attention each prefix attends causally to itself, and each completion row to its
    prefix `owner[row]` (its valid positions) and causally to itself.

    Against running the prefixes as a pass of their own with a KV cache: the same values, and
    one set of ops instead of two (on a small model most of a pass's cost is per op, not per
    token), and no cache written, so activation checkpointing can recompute a layer.
    """

    def __init__(self, prefix_lengths: Tensor, width: int, owner: Tensor, comp_width: int) -> None:
        self.u, self.w = len(prefix_lengths), width
        self.r, self.c = len(owner), comp_width
        self.owner = owner
        # A completion query sees its prefix's real positions and, causally, its own row: a real
        # query then sees no padding (it comes after it); a padding query's output is never used.
        position = torch.arange(max(width, comp_width), device=owner.device)
        prefix_valid = position[:width] < prefix_lengths[owner][:, None]  # [R, W]
        causal = position[:comp_width] <= position[:comp_width, None]  # [C, C]
        self.mask = torch.cat(
            [prefix_valid[:, None, :].expand(-1, comp_width, -1), causal.expand(len(owner), -1, -1)], 2
        )[:, None]  # [R, 1, C, W+C]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float, gqa: bool) -> Tensor:
        """Attention outputs `[1, N, heads * D]` from q `[1, N, heads, D]`, k, v `[1, N, kv_heads, D]`."""
        n = self.u * self.w

        def split(x: Tensor, rows: int, width: int, part: slice) -> Tensor:  # -> [rows, heads, width, D]
            return x[0, part].view(rows, width, x.shape[2], x.shape[3]).transpose(1, 2)

        qp, kp, vp = (split(x, self.u, self.w, slice(0, n)) for x in (q, k, v))
        # Right-padded prefixes: a real position sees only real ones under the plain causal mask.
        out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale, enable_gqa=gqa)
        if self.c == 0:  # every row's only target is predicted by its prefix
            return out_p.transpose(1, 2).reshape(n, -1)[None]
        qc, kc, vc = (split(x, self.r, self.c, slice(n, None)) for x in (q, k, v))
        keys, values = torch.cat([kp[self.owner], kc], 2), torch.cat([vp[self.owner], vc], 2)
        out_c = F.scaled_dot_product_attention(qc, keys, values, attn_mask=self.mask, scale=scale, enable_gqa=gqa)
        return torch.cat([out_p.transpose(1, 2).reshape(n, -1), out_c.transpose(1, 2).reshape(self.r * self.c, -1)])[
            None
        ]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.dtype == torch.float32 and self.weight.dtype == torch.float32
        ):  # torch's kernel, the same formula (float32 already)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # As transformers: normalise in float32, scale in the input's dtype.
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, with the sign of rotate_half already in `sin`'s first half
    (rotate_half(x) = (-x2, x1) = roll(x) * (-1, 1)): one op fewer each way than transformers' form."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin)


class Attention(nn.Module):
    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or hidden // self.heads
        self.layer_idx = layer_idx
        qkv_bias = config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
        out_bias = config.model_type in ("llama", "qwen3") and bool(getattr(config, "attention_bias", False))
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=out_bias)
        if config.model_type == "qwen3":  # per-head norms of queries and keys, before RoPE
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        causal: bool,
        cache: Any,
        packing: Packing | None = None,
    ) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.head_dim)
        k = self.k_proj(x).view(b, t, -1, self.head_dim)
        v = self.v_proj(x).view(b, t, -1, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if packing is not None:  # cos, sin: [1, N, 1, D], one position per token
            out = packing.attend(
                _rope(q, cos, sin), _rope(k, cos, sin), v, self.head_dim**-0.5, self.kv_heads != self.heads
            )
            return self.o_proj(out)
        v = v.transpose(1, 2)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, heads, T, D]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if t == 1:
            out = self._one_query(q, k, v, mask)
        else:
            out = self._attend(q, k, v, mask, causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=self.head_dim**-0.5, enable_gqa=self.kv_heads != self.heads
        )

    def _one_query(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attention of one new token per row (decoding) as two matmuls over (row, kv head), the query
        heads that share a kv head as the rows of one product (grouped-query attention needs no
        repeated keys). scaled_dot_product_attention's CPU kernel tiles for long queries: at
        SmolLM2's decode shapes (64 rows, 3 kv x 3 query heads, 110 keys, 2 threads) it took 0.70 ms
        in float32 and 4.1 ms in bf16 against 0.50 and 0.29 here (benchmarks/README.md, "decode
        attention"). q: [B, heads, 1, D]; k, v: [B, kv_heads, K, D] (views of the cache are fine)."""
        b, _, _, d = q.shape
        keys = k.shape[2]
        grouped = q.view(b, self.kv_heads, -1, d)  # [B, kv, group, D]
        scores = torch.matmul(grouped, k.transpose(-1, -2)).mul_(d**-0.5)  # [B, kv, group, K]
        if mask is not None:  # [B, 1, 1, K] bool
            scores.masked_fill_(~mask.view(b, 1, 1, keys), float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(weights, v).view(b, self.heads, 1, d)


class MLP(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(
            F.silu(self.gate_proj(x), inplace=True).mul_(self.up_proj(x))
        )  # no autograd: in the gate's buffer


class DecoderLayer(nn.Module):
    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        causal: bool,
        cache: Any,
        packing: Packing | None = None,
    ) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward, x, cos, sin, mask, causal, cache, packing, use_reentrant=False)
        return self._forward(x, cos, sin, mask, causal, cache, packing)

    def _forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        causal: bool,
        cache: Any,
        packing: Packing | None = None,
    ) -> Tensor:
        # Residuals added into the branch's output (fresh, and not saved by its linear for backward):
        # one [B, T, H] tensor fewer per add, the same sums.
        x = self.self_attn(self.input_layernorm(x), cos, sin, mask, causal, cache, packing).add_(x)
        return self.mlp(self.post_attention_layernorm(x)).add_(x)


class Backbone(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.padding_idx = getattr(config, "pad_token_id", None)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        inv_freq, self.rope_scaling = _inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Any = None,
        **_: Any,
    ) -> Output:
        cache = past_key_values if cache is None else cache  # transformers' name before 5.x's `cache`
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, t = x.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=x.device)[None]
        cos, sin = self._rope_tables(position_ids, x.dtype)
        cos, sin = cos[:, None], sin[:, None]  # [B|1, 1, T, D]: heads come before positions here
        mask, causal = _attention_mask(attention_mask, b, t, past, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, causal, cache)
        return Output(last_hidden_state=self.norm(x), cache=cache)

    def forward_packed(
        self, input_ids: Tensor | None, inputs_embeds: Tensor | None, position_ids: Tensor, packing: Packing
    ) -> Tensor:
        """Last hidden states `[1, N, H]` of the tokens laid out by `packing` (prefixes, then the
        completion rows, flattened into one sequence), each at its `position_ids` `[1, N]`."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self._rope_tables(position_ids, x.dtype)
        cos, sin = cos[:, :, None], sin[:, :, None]  # [1, N, 1, D]: per token, before the heads
        for layer in self.layers:
            x = layer(x, cos, sin, None, False, None, packing)
        return self.norm(x)

    def _rope_tables(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and signed sin `[B|1, T, D]` at `position_ids` `[B|1, T]` (sign: see `_rope`)."""
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # [B|1, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (emb.cos() * self.rope_scaling).to(dtype), (emb.sin() * self.rope_scaling).to(dtype)
        sin[..., : sin.shape[-1] // 2].neg_()  # rotate_half's sign (see _rope)
        return cos, sin


def _attention_mask(
    attention_mask: Tensor | None, b: int, t: int, past: int, device: torch.device
) -> tuple[Tensor | None, bool]:
    """(boolean mask `[B|1, 1, T, past+T]` or None, is_causal) for scaled_dot_product_attention.

    Query i (cache position past+i) sees the unpadded keys at positions <= past+i. Without a cache
    and with right padding only, plain causal attention gives the real positions the same values
    (padding comes after them), so the fast causal kernel runs. A query always sees itself, so a
    padding query never has an empty row (NaN); its output is never used.
    """
    valid = None if attention_mask is None else attention_mask.bool()
    if valid is not None and past == 0 and bool((valid[:, :-1] >= valid[:, 1:]).all()):  # right padding only
        valid = None
    if valid is None or bool(valid.all()):
        if past == 0 or t == 1:
            return None, t > 1
        valid = None
    keys = torch.arange(past + t, device=device)
    queries = keys[past:, None]  # [T, 1]
    allowed = keys <= queries  # [T, K]
    if valid is None:
        return allowed[None, None], False
    allowed = (allowed & valid[:, None, :]) | (keys == queries)  # [B, T, K]
    return allowed[:, None], False


def _inv_freq(config: Any) -> tuple[Tensor, float]:
    rope = _rope_parameters(config)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default":
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # no modeling import

    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config)
    return inv_freq.float(), float(scaling)


class CausalLM(nn.Module):
    """A Llama-family causal LM with transformers' parameter names and call interface."""

    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]  # FSDP2 shards each block (grpo_cli.training.wrapping.wrap)
    computes_logprobs = True
    """`forward(target_mask=..., logprob_head=fn)` returns `fn(self, ...)`, token log-probs through
    the caller's LM head instead of logits: how the update calls the model under FSDP2, whose hooks
    on this module's forward gather its own weights (embedding, final norm, head) first. The head is
    an argument so that the model never imports the trainer's log-prob code."""

    def __init__(self, config: Any, generation_config: Any = None) -> None:
        super().__init__()
        self.config = config
        self.generation_config = generation_config
        self.name_or_path = str(getattr(config, "_name_or_path", ""))
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def tied(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))

    @property
    def base_model(self) -> Backbone:
        return self.model

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        target_mask: Tensor | None = None,
        temperature: float = 1.0,
        entropy: bool = False,
        logprob_head: Callable[..., Any] | None = None,
        past_key_values: Any = None,
        **_: Any,
    ) -> Any:
        if target_mask is not None:  # (log-probs [n, T], mean entropy | None): see `computes_logprobs`
            assert logprob_head is not None, "target_mask needs logprob_head"
            return logprob_head(self, input_ids, attention_mask, target_mask, temperature, entropy)
        out = self.model(input_ids, attention_mask, position_ids, cache, inputs_embeds, past_key_values=past_key_values)
        hidden = out.last_hidden_state
        # The kept positions as their own tensor: a strided slice makes the head's matmul expand its
        # weight per row instead of running one mm (a prefill of 64 prompts on SmolLM2: a 3.4 GB copy
        # and 3.7 of its 5.5 s).
        out.logits = self.lm_head(hidden[:, -logits_to_keep:].contiguous() if logits_to_keep else hidden)
        return out

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Recompute each layer in backward (always non-reentrant here)."""
        for layer in self.model.layers:
            layer.gradient_checkpointing = True

    def save_pretrained(self, path: str | Path, state_dict: dict[str, Tensor] | None = None, **_: Any) -> None:
        """`config.json`, `generation_config.json` and `model.safetensors`, as transformers writes them."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = dict(state_dict if state_dict is not None else self.state_dict())
        if self.tied:  # stored once, under the embedding's name, as transformers does
            state.pop("lm_head.weight", None)
        self.config.dtype = self.dtype
        self.config.save_pretrained(path)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(path)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()},
            str(path / "model.safetensors"),
            metadata={"format": "pt"},
        )


# ------------------------------------------------------------------------------------- loading


@contextmanager
def _no_init() -> Iterator[None]:
    """Build modules without initialising weights that loading replaces. (Not the meta device:
    initialising on it imports torch._dynamo, the ~70 MB this module exists to avoid.)"""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved  # type: ignore[method-assign]


def load(model_dir: Path, dtype: torch.dtype) -> CausalLM | str:
    """The model in `model_dir` on the CPU in `dtype`, or the reason it needs transformers."""
    from safetensors import safe_open
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    reason = unsupported(config, model_dir)
    if reason is not None:
        return reason
    try:
        generation = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:  # no generation_config.json: derived from the model's config, as transformers does
        generation = GenerationConfig.from_model_config(config)
    with _no_init():
        model = CausalLM(config, generation)
    expected = {k for k in model.state_dict() if not (model.tied and k == "lm_head.weight")}
    state: dict[str, Tensor] = {}
    for file in _weight_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.endswith(_IGNORED_KEYS) or (model.tied and key == "lm_head.weight"):
                    continue
                state[key] = f.get_tensor(key).to(dtype)
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        return f"weights do not match the architecture (missing {missing[:3]}, unexpected {extra[:3]})"
    model.load_state_dict(state, strict=False, assign=True)
    if model.tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    inv_freq, _ = _inv_freq(config)
    model.model.inv_freq = inv_freq
    return model
