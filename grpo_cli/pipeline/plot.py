"""PNG plots: pass@k / maj@k curves per model (DeepSeekMath Figure 7 shape) and training curves.

matplotlib is imported inside the functions, so importing this module stays cheap. Figures are drawn
on an Agg canvas directly (no pyplot), so no global backend is switched and no window ever opens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CURVE_METRICS = {"pass@k": "Pass@K", "maj@k": "Maj@K"}  # metric -> panel title

TRAINING_PANELS: dict[str, tuple[str, str, float]] = {
    # metrics.jsonl key -> (panel title, y-axis label with its unit, scale to that unit)
    "reward_mean": ("Reward", "mean reward per sample", 1.0),
    "accuracy": ("Accuracy", "samples correct (%)", 100.0),
    "kl": ("KL to the reference", "KL (nats per token)", 1.0),
    "completion_len_mean": ("Completion length", "mean length (tokens)", 1.0),
    "zero_std_frac": ("Groups without signal", "groups with equal rewards (%)", 100.0),
    "entropy": ("Policy entropy", "entropy (nats per token)", 1.0),
    "clip_frac": ("Clipped ratios", "tokens clipped (%)", 100.0),
    "loss": ("Loss", "policy loss", 1.0),
}
MISSING = {"kl": "not logged: no reference model\n(train.loss.beta = 0)"}
"""Why a panel's metric may be absent from a run, where there is one reason."""
TRAINING_KEYS = ["reward_mean", "accuracy", "kl", "completion_len_mean", "zero_std_frac", "entropy"]
"""The panels of training-curves.png and `grpo train --plot`."""


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def _save(fig: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)


def plot_curves(results: dict[str, dict[str, Any]], path: Path, title: str | None = None) -> None:
    """One panel per metric (accuracy % vs k, log2 x-axis), one line per model label; one legend
    under the panels, so long labels (checkpoint paths) stay readable.

    results maps a label to an `evaluate_groups` result; k keys may be ints or, after a JSON round
    trip, strings.
    """
    metrics = [m for m in CURVE_METRICS if any(m in r for r in results.values())]
    if not metrics:
        raise ValueError(f"no curves to plot: results hold none of {', '.join(CURVE_METRICS)}")
    fig, axes = _figure(1, len(metrics), 4.8, 3.8)
    for ax, metric in zip(axes, metrics):
        all_ks: set[int] = set()
        for label, result in results.items():
            if metric not in result:
                continue
            points = sorted((int(k), 100.0 * v) for k, v in result[metric].items())
            all_ks.update(k for k, _ in points)
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
        ax.set_xlabel("K: samples per problem (log scale)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(CURVE_METRICS[metric])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=1 if max(map(len, labels)) > 40 else 3)
    first = next(iter(results.values()))
    shape = f": {first['problems']} problems x {first['n']} samples" if "problems" in first and "n" in first else ""
    fig.suptitle(_short(title or f"Pass@K and Maj@K{shape}", 90))
    _save(fig, path)


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_training(
    metrics_rows: list[dict[str, Any]],
    path: Path,
    keys: list[str] | None = None,
    *,
    title: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """One panel per key (default TRAINING_KEYS), value vs `step`, each step thin and a moving
    average bold once there are 10 steps or more; rows without the key are skipped. The accuracy
    panel also marks the held-out accuracy `before` (at step 0) and `after` (at the last step)."""
    from matplotlib.ticker import MaxNLocator

    keys = keys or TRAINING_KEYS
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _figure(nrows, ncols, 4.0, 3.0)
    last_step = max((r["step"] for r in metrics_rows if r.get("step") is not None), default=0)
    for ax, key in zip(axes, keys):
        name, unit, scale = TRAINING_PANELS.get(key, (key, key, 1.0))
        points = [
            (r["step"], scale * r[key]) for r in metrics_rows if r.get("step") is not None and r.get(key) is not None
        ]
        steps, values = [s for s, _ in points], [v for _, v in points]
        if points:
            window = max(1, len(points) // 10)
            if window > 1:
                ax.plot(steps, values, linewidth=0.8, alpha=0.35, color="C0", label="each step")
                ax.plot(
                    steps, _moving_average(values, window), linewidth=1.8, color="C0", label=f"mean of {window} steps"
                )
            else:
                ax.plot(
                    steps,
                    values,
                    linewidth=1.5,
                    marker="." if len(points) < 30 else None,
                    color="C0",
                    label="each step",
                )
        else:
            note = MISSING.get(key, "not logged in this run")
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=9)
            ax.set_xlim(0, max(1, last_step))
        if key == "accuracy":
            for label, result, step, color in (
                ("held-out before", before, 0, "C3"),
                ("held-out after", after, last_step, "C2"),
            ):
                if result is not None:
                    ax.scatter([step], [100.0 * result["accuracy"]], color=color, zorder=3, s=40, label=label)
        ax.set_title(name, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step", fontsize=9)
        ax.set_ylabel(unit, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and (key == "accuracy" or len(points) >= 10):
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(_short(title or "Training curves", 110))
    _save(fig, path)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def training_title(model: str, data: str, algorithm: str) -> str:
    """`Training curves: MODEL on DATA (ALGORITHM)`, the data spec without its options."""
    return f"Training curves: {Path(model).name} on {data.split('?')[0]} ({algorithm})"
