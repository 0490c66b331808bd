"""grpo's AdamW and learning-rate schedule (grpo_cli.training.optim) against torch.optim: the same
parameters and state after each step (fused kernel and per-parameter path), state-dict round trips
(its own and torch's format), and LambdaLR's learning rates and resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from grpo_cli.training import optim

SHAPES = [(5, 3), (7,), (2, 3, 4), ()]
HYPER = {"lr": 3e-2, "betas": (0.9, 0.95), "eps": 1e-6, "weight_decay": 0.1}


def _params(dtype=torch.float32, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def _grads(step: int, params, seed: int = 100) -> list[torch.Tensor | None]:
    """Random gradients; parameter 1 gets none on step 2 (an unused weight), parameter 3 none on step 0."""
    g = torch.Generator().manual_seed(seed + step)
    grads = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    if step == 2:
        grads[1] = None
    if step == 0:
        grads[3] = None
    return grads


def _run(opt, params, steps: range) -> None:
    for step in steps:
        for p, g in zip(params, _grads(step, params)):
            p.grad = None if g is None else g.clone()
        opt.step()
        opt.zero_grad()


def _assert_same(ours_params, ours_opt, torch_params, torch_opt, rtol=0.0, atol=0.0):
    for i, (a, b) in enumerate(zip(ours_params, torch_params)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m, i=i: f"param {i}: {m}")
        sa, sb = ours_opt.state.get(a), torch_opt.state.get(b)
        assert (sa is None) == (not sb), i  # no state for a parameter that never had a gradient
        if sa is None:
            continue
        assert float(sa["step"]) == float(sb["step"]), i
        assert sa["step"].dtype == torch.float32
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                sa[key], sb[key], rtol=rtol, atol=atol, msg=lambda m, i=i, key=key: f"param {i} {key}: {m}"
            )


@pytest.fixture(params=["fused", "per-parameter"])
def path(request, monkeypatch):
    """Which update AdamW runs: torch's fused kernel, or the per-parameter arithmetic."""
    if request.param == "per-parameter":
        monkeypatch.setattr(optim, "_FUSED_DTYPES", ())
    return request.param


def _torch_adamw(params, path):
    # The fused path is torch's fused kernel; the per-parameter path torch's single-tensor one.
    return (
        torch.optim.AdamW(params, **HYPER, fused=True)
        if path == "fused"
        else torch.optim.AdamW(params, **HYPER, foreach=False)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamw_equals_torch(path, dtype):
    ours, theirs = _params(dtype), _params(dtype)
    a, b = optim.AdamW(ours, **HYPER), _torch_adamw(theirs, path)
    for step in range(5):
        _run(a, ours, range(step, step + 1))
        _run(b, theirs, range(step, step + 1))
        _assert_same(ours, a, theirs, b)  # the same kernel or the same arithmetic: bit for bit
    assert (
        float(a.state[ours[1]]["step"]) == 4 and float(a.state[ours[3]]["step"]) == 4
    )  # a step without a gradient does not count
    assert not torch.equal(ours[0].detach(), _params(dtype)[0])


def test_fused_and_per_parameter_paths_agree(monkeypatch):
    fused, plain = _params(), _params()
    a, b = optim.AdamW(fused, **HYPER), optim.AdamW(plain, **HYPER)
    _run(a, fused, range(4))
    monkeypatch.setattr(optim, "_FUSED_DTYPES", ())
    _run(b, plain, range(4))
    _assert_same(fused, a, plain, b, rtol=1e-6, atol=1e-7)


def test_hand_computed_first_steps(path):
    """Step 1 of Adam moves each weight by lr * sign(grad) (bias-corrected m / sqrt(v) = g / |g|),
    after decoupled decay: w (1 - lr wd) - lr g / (|g| + eps)."""
    lr, wd, eps = 0.1, 0.5, 1e-8
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = optim.AdamW([w], lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=wd)
    w.grad = torch.tensor([0.5, -4.0, 0.0])
    opt.step()
    want = torch.tensor([1.0, -2.0, 3.0]) * (1 - lr * wd) - lr * torch.tensor([1.0, -1.0, 0.0])
    torch.testing.assert_close(w.detach(), want, rtol=1e-6, atol=1e-6)
    # Step 2 with the same gradient: m = g (1 - b1^2), v = g^2 (1 - b2^2); corrected: the same ratio.
    before = w.detach().clone()
    w.grad = torch.tensor([0.5, -4.0, 0.0])
    opt.step()
    torch.testing.assert_close(
        w.detach(), before * (1 - lr * wd) - lr * torch.tensor([1.0, -1.0, 0.0]), rtol=1e-5, atol=1e-6
    )
    s = opt.state[w]
    torch.testing.assert_close(s["exp_avg"], torch.tensor([0.5, -4.0, 0.0]) * (1 - 0.9**2))
    torch.testing.assert_close(s["exp_avg_sq"], torch.tensor([0.25, 16.0, 0.0]) * (1 - 0.999**2))


def test_zero_grad():
    params = _params()
    opt = optim.AdamW(params, **HYPER)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# ------------------------------------------------------------------------------------- state dict


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_resume_equals_uninterrupted(path):
    straight = _params()
    a = optim.AdamW(straight, **HYPER)
    _run(a, straight, range(4))

    first = _params()
    b = optim.AdamW(first, **HYPER)
    _run(b, first, range(2))
    saved = _roundtrip(b.state_dict())
    assert sorted(saved["state"]) == [0, 1, 2, 3] and saved["param_groups"][0]["params"] == [0, 1, 2, 3]
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    c = optim.AdamW(
        resumed, lr=1.0, betas=(0.5, 0.5), eps=1.0, weight_decay=0.0
    )  # hyper-parameters come from the state
    c.load_state_dict(saved)
    assert c.param_groups[0]["betas"] == HYPER["betas"] and c.param_groups[0]["lr"] == HYPER["lr"]
    _run(c, resumed, range(2, 4))
    _assert_same(resumed, c, straight, a)


def test_state_dict_is_torch_format_and_loads_into_torch():
    ours = _params()
    a = optim.AdamW(ours, **HYPER)
    _run(a, ours, range(2))
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    b = torch.optim.AdamW(theirs, **HYPER, fused=True)
    b.load_state_dict(_roundtrip(a.state_dict()))
    ours_more = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    c = optim.AdamW(ours_more, **HYPER)
    c.load_state_dict(_roundtrip(a.state_dict()))
    _run(b, theirs, range(2, 4))
    _run(c, ours_more, range(2, 4))
    # Our param group lacks torch's flags, so torch falls back to its default (non-fused) update
    # after loading it: the same arithmetic up to rounding, not bit for bit.
    _assert_same(ours_more, c, theirs, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loads_torch_adamw_state_and_continues_identically(path, dtype):
    theirs = _params(dtype)
    b = _torch_adamw(theirs, path)
    _run(b, theirs, range(3))
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    a = optim.AdamW(ours, lr=1.0)
    a.load_state_dict(_roundtrip(b.state_dict()))
    assert a.param_groups[0]["weight_decay"] == HYPER["weight_decay"] and a.param_groups[0]["eps"] == HYPER["eps"]
    _run(b, theirs, range(3, 6))
    _run(a, ours, range(3, 6))
    _assert_same(ours, a, theirs, b)


def test_load_state_dict_with_a_parameter_never_updated():
    """A parameter without state (no gradient yet) stays without state, and the others map by index."""
    params = _params()
    a = optim.AdamW(params, **HYPER)
    params[0].grad = torch.ones_like(params[0])
    params[2].grad = torch.ones_like(params[2])
    a.step()
    saved = _roundtrip(a.state_dict())
    assert sorted(saved["state"]) == [0, 2]
    fresh = [torch.nn.Parameter(p.detach().clone()) for p in params]
    b = optim.AdamW(fresh, **HYPER)
    b.load_state_dict(saved)
    assert set(b.state) == {fresh[0], fresh[2]}
    torch.testing.assert_close(b.state[fresh[2]]["exp_avg"], a.state[params[2]]["exp_avg"])


def test_load_state_dict_wrong_parameter_count_raises():
    params = _params()
    a = optim.AdamW(params, **HYPER)
    _run(a, params, range(1))
    b = optim.AdamW(_params()[:3], **HYPER)
    with pytest.raises(ValueError, match="parameters"):
        b.load_state_dict(a.state_dict())
    theirs = torch.optim.AdamW(_params() + [torch.nn.Parameter(torch.zeros(2))], **HYPER)
    with pytest.raises(ValueError, match="parameters"):
        optim.AdamW(_params(), **HYPER).load_state_dict(theirs.state_dict())


def test_load_state_dict_wrong_shapes_raises():
    """State of another model with as many tensors (here: the same tensors in another order) is an
    error at load time. Loaded as is, the fused kernel's next step writes past the smaller buffers
    (heap corruption / segfault: torch.optim.AdamW(fused=True) does the same)."""
    params = _params()
    a = optim.AdamW(params, **HYPER)
    _run(a, params, range(1))
    other = optim.AdamW(list(reversed(_params())), **HYPER)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(a.state_dict())


def test_build_gives_adamw_and_schedule():
    model = torch.nn.Linear(3, 2)
    opt, schedule = optim.build(model, 0.2, (0.8, 0.9), 0.05, lambda i: (i + 1) / 4)
    assert isinstance(opt, optim.AdamW) and isinstance(schedule, optim.Schedule)
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["weight_decay"] == 0.05
    assert group["params"] == list(model.parameters())
    assert group["lr"] == pytest.approx(0.05)
    schedule.step()
    assert group["lr"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------- schedule


def _warmup_cosine(i: int) -> float:
    return (i + 1) / 3 if i < 3 else 0.5 * (1 + math.cos(math.pi * (i - 3) / 7))


def test_schedule_equals_lambda_lr():
    ours = optim.AdamW(_params(), lr=0.3)
    theirs = torch.optim.AdamW(_params(), lr=0.3)
    a, b = optim.Schedule(ours, _warmup_cosine), torch.optim.lr_scheduler.LambdaLR(theirs, _warmup_cosine)
    seen = []
    for _ in range(12):
        assert a.get_last_lr() == pytest.approx(b.get_last_lr(), rel=1e-12)
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
        seen.append(ours.param_groups[0]["lr"])
        ours.step()
        theirs.step()  # no gradients: nothing moves, but LambdaLR sees the usual order
        a.step()
        b.step()
    assert a.last_epoch == b.last_epoch == 12
    assert seen[0] == pytest.approx(0.1) and seen[2] == pytest.approx(0.3) and seen[10] == pytest.approx(0.0, abs=1e-12)


def test_schedule_state_dict_resumes_at_the_same_lr():
    a = optim.Schedule(optim.AdamW(_params(), lr=0.3), _warmup_cosine)
    for _ in range(5):
        a.step()
    want = a.get_last_lr()

    # As trainer.train resumes: build, load the optimizer's state (its lr is the scheduled one), then the schedule's.
    opt = optim.AdamW(_params(), lr=0.3)
    b = optim.Schedule(opt, _warmup_cosine)
    opt.load_state_dict(_roundtrip(a.optimizer.state_dict()))
    b.load_state_dict(_roundtrip(a.state_dict()))
    assert b.get_last_lr() == pytest.approx(want, rel=1e-12)
    a.step()
    b.step()
    assert b.get_last_lr() == pytest.approx(a.get_last_lr(), rel=1e-12)


def test_schedule_loads_a_lambda_lr_state_dict():
    theirs = torch.optim.AdamW(_params(), lr=0.3)
    lam = torch.optim.lr_scheduler.LambdaLR(theirs, _warmup_cosine)
    for _ in range(6):
        theirs.step()
        lam.step()
    ours = optim.AdamW(_params(), lr=0.3)
    sched = optim.Schedule(ours, _warmup_cosine)
    ours.load_state_dict(_roundtrip(theirs.state_dict()))
    sched.load_state_dict(_roundtrip(lam.state_dict()))
    assert sched.last_epoch == 6
    assert sched.get_last_lr() == pytest.approx(lam.get_last_lr(), rel=1e-12)
    for _ in range(3):
        sched.step()
        lam.step()
        assert sched.get_last_lr() == pytest.approx(lam.get_last_lr(), rel=1e-12)
