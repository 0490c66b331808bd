"""`grpo rm train`: a reward model (outcome or process) from scored samples, for the `prm` verifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import ModelOpt, PresetOpt, QuietOpt, SeedOpt, SetOpt, ThreadsOpt, resolve_config

app = typer.Typer(help="Learned reward models (ORM / PRM) for the `prm` verifier's hf backend.", no_args_is_help=True)


@app.command("train")
def train(
    samples: Annotated[
        Path, typer.Argument(help="Scored samples JSONL (`grpo score`; with `--verifier prm` for step rewards).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Reward model folder to write (a Hugging Face model).")
    ] = Path("reward-model"),
    kind: Annotated[
        str | None,
        typer.Option(help="prm (a label per step) or orm (one per sample) (config: train.reward_model.kind)."),
    ] = None,
    style: Annotated[
        str | None, typer.Option(help="math_shepherd or qwen head (config: train.reward_model.style).")
    ] = None,
    base: Annotated[
        str,
        typer.Option(
            help="Causal LM to build the RM from, or an RM folder to train further (`tiny`: the shipped model)."
        ),
    ] = "tiny",
    labels: Annotated[
        str, typer.Option(help="steps: the file's step rewards (orm: its reward); rule: run the prm rule checker now.")
    ] = "steps",
    rollouts: Annotated[
        int | None,
        typer.Option(min=1, help="Math-Shepherd labels: K continuations of each step from --model (default: off)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Passes over the samples (config: train.reward_model.epochs).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (config: train.reward_model.lr).")] = None,
    held_out: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of problems held out for accuracy/AUC.")
    ] = 0.1,
    save_every: Annotated[int, typer.Option(min=0, help="Checkpoint every N updates (0: only the final folder).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")] = False,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train an outcome or process reward model; it loads into `--verifier prm:backend=hf,model=OUT`."""
    from grpo_cli.errors import UserError

    if labels not in ("steps", "rule"):
        raise UserError(f"--labels must be steps or rule, got {labels!r}")
    cfg = resolve_config(
        preset,
        set_,
        seed=seed,
        model__path=model,
        model__threads=threads,
        train__reward_model__kind=kind,
        train__reward_model__style=style,
        train__reward_model__epochs=epochs,
        train__reward_model__lr=lr,
        train__reward_model__rollouts=rollouts,
    )
    from grpo_cli.report import Reporter
    from grpo_cli.training.reward_model import train_from_samples

    report = Reporter.console(quiet)
    result = train_from_samples(
        samples,
        out,
        cfg,
        report,
        base=base,
        labels="rollouts" if rollouts else labels,
        held_out=held_out,
        save_every=save_every,
        resume=resume,
    )
    after = result["after"]
    figures = (
        f"held-out steps {int(after['steps'])}: accuracy {100 * after['accuracy']:.1f}% "
        f"(majority label {100 * after['majority']:.1f}%), AUC {after['auc']:.3f}"
        if after.get("steps")
        else "no held-out steps"
    )
    report.summary(
        f"{result['kind']} ({result['style']}) -> {out}: {figures}\nscore with: --verifier {result['verifier']}"
    )
