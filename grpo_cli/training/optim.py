"""The optimizer and learning-rate schedule of `grpo train`.

`AdamW` is torch.optim.AdamW's update (the same fused kernel where torch has one, the same
arithmetic otherwise) and its `state_dict` format, without torch.optim: torch's `Optimizer`
imports torch._dynamo, and with it sympy, on first use (about 70 MB resident in every training
process, more than the shipped model's whole training step). Under FSDP2 the optimizer is
torch's, because the sharded state-dict helpers need one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_TORCH_FLAGS = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": True,
}
"""torch.optim.AdamW's options for this update, written into the state dict so torch's AdamW loads it as
the same optimizer."""


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), one parameter group."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        self.param_groups: list[dict[str, Any]] = [
            {"params": list(params), "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        ]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                buckets.setdefault((p.device, p.dtype), []).append(p)
        for (device, dtype), params in buckets.items():
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            if _fused(device, dtype):
                torch._fused_adamw_(  # what torch.optim.AdamW(fused=True) calls
                    params,
                    [p.grad for p in params],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [],
                    steps,
                    amsgrad=False,
                    lr=group["lr"],
                    beta1=group["betas"][0],
                    beta2=group["betas"][1],
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
            else:
                for p, s in zip(params, states):
                    _adamw(p, p.grad, s, group)

    def _state(self, p: Tensor) -> dict[str, Tensor]:
        if p not in self.state:
            self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return self.state[p]

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's format: per-parameter state keyed by the parameter's index."""
        params = self.param_groups[0]["params"]
        group = {**_TORCH_FLAGS, **{k: v for k, v in self.param_groups[0].items() if k != "params"}}
        return {
            "state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
            "param_groups": [{**group, "params": list(range(len(params)))}],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load `state_dict()`'s output, or torch.optim.AdamW's for the same parameters."""
        params = self.param_groups[0]["params"]
        (saved,) = state["param_groups"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"optimizer state holds {len(saved['params'])} parameters, the model {len(params)}")
        for key in ("lr", "betas", "eps", "weight_decay"):
            self.param_groups[0][key] = tuple(saved[key]) if key == "betas" else saved[key]
        self.state = {}
        for index, entry in state["state"].items():
            p = params[saved["params"].index(int(index))]
            if entry["exp_avg"].shape != p.shape:  # another model's state: the fused kernel would write out of bounds
                raise ValueError(
                    f"optimizer state of parameter {index} has shape {tuple(entry['exp_avg'].shape)}, the "
                    f"model's {tuple(p.shape)}"
                )
            self.state[p] = {
                "step": entry["step"].to(device=p.device, dtype=torch.float32),
                "exp_avg": entry["exp_avg"].to(p),
                "exp_avg_sq": entry["exp_avg_sq"].to(p),
            }


def _adamw(p: Tensor, grad: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
    """One parameter's update where no fused kernel exists (torch.optim.AdamW's single-tensor path)."""
    beta1, beta2 = group["betas"]
    step = float(state["step"])
    p.mul_(1 - group["lr"] * group["weight_decay"])
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
    p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**step))


class Schedule:
    """The learning rate of optimizer step i is the peak times `multiplier(i)`: as
    torch.optim.lr_scheduler.LambdaLR, whose `last_epoch` its state dict keeps."""

    def __init__(self, optimizer: Any, multiplier: Callable[[int], float]) -> None:
        self.optimizer, self.multiplier = optimizer, multiplier
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.multiplier(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()


def build(
    model: Any, lr: float, betas: tuple[float, float], weight_decay: float, multiplier: Callable[[int], float]
) -> tuple[Any, Schedule]:
    """(optimizer, schedule) for `model`'s trainable parameters (all of them, or a LoRA adapter's)
    (torch's AdamW under FSDP2, else `AdamW`)."""
    from grpo_cli.ranks import is_fsdp

    params = [p for p in model.parameters() if p.requires_grad]

    if is_fsdp(model):
        optimizer: Any = torch.optim.AdamW(
            params,
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            fused=all(_fused(p.device, p.dtype) for p in params),
        )
    else:
        optimizer = AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return optimizer, Schedule(optimizer, multiplier)


def _fused(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch has the fused AdamW kernel for parameters of this device and dtype."""
    return device.type in ("cpu", "cuda") and dtype in _FUSED_DTYPES
