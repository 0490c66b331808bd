"""`grpo train`: the GRPO loop, with a before/after evaluation on the held-out split."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from grpo_cli.cli.common import (
    ModelOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    TrainDataOpt,
    VerifierOpt,
    cfg_help,
    verifier_specs,
)

if TYPE_CHECKING:
    from grpo_cli.config import Config, ConfigLayers


def train(
    model: ModelOpt = None,
    data: TrainDataOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help=cfg_help("Run folder.", "train.run.out_dir"))] = None,
    steps: Annotated[int | None, typer.Option(help=cfg_help("Optimisation steps.", "train.run.steps"))] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder from its last checkpoint.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw the training curves to this PNG at the end.")
    ] = None,
    log_completions: Annotated[
        int | None,
        typer.Option(
            "--log-completions",
            min=0,
            help="Write rollouts/step-NNNNNN.jsonl every N steps too (config: train.run.log_completions).",
        ),
    ] = None,
    report_to: Annotated[
        str | None,
        typer.Option(
            "--report-to", help="Comma-separated: auto, tensorboard, wandb, or none (config: train.run.report_to)."
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            help="Train with N processes on this machine: re-runs this command under torchrun (train.run.parallel).",
        ),
    ] = None,
    verifier: VerifierOpt = None,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train with GRPO and its variants.

    Default: the tiny preset, which improves the shipped model in minutes on a CPU."""
    from grpo_cli.config import dump_config

    if resume is not None:
        # The run's own resolved config is the base; options given now still override it.
        saved = resume / "config.yaml"
        if not saved.is_file():
            from grpo_cli.errors import UserError

            raise UserError(f"--resume {resume}: no config.yaml there (not a grpo run folder?)")
        preset = preset or str(saved)
        out = out or resume
    from grpo_cli.config import config_layers, stage_configs

    overrides = {
        "seed": seed,
        "model.path": model,
        "model.threads": threads,
        "data.train": data,
        "train.out_dir": str(out) if out else None,
        "train.steps": steps,
        "verifiers": verifier_specs(verifier),
        "train.log_completions": log_completions,
        "train.report_to": None
        if report_to is None
        else [r.strip() for r in report_to.split(",") if r.strip() not in ("", "none")],
    }
    layers = config_layers(preset, set_, overrides)
    if layers.stages:
        from grpo_cli.training.stages import chain

        _train_staged(layers, chain(stage_configs(layers)), resume=resume, dry_run=dry_run, nproc=nproc, plot=plot,
                      quiet=quiet)  # fmt: skip
        return
    from grpo_cli.config import base_config

    cfg = base_config(layers)
    _check(cfg, _model_to_load(cfg, resume is not None))
    if plot is not None:
        from grpo_cli.pipeline.data import check_writable

        check_writable(plot, "--plot")
    if dry_run:
        typer.echo(dump_config(cfg), nl=False)
        return
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:
        # The config was checked here once; each rank resolves the same arguments again.
        from grpo_cli.cli.relaunch import relaunch, without_nproc

        raise typer.Exit(relaunch(nproc, without_nproc(sys.argv[1:])))
    from grpo_cli import ranks
    from grpo_cli.report import Reporter
    from grpo_cli.training.trainer import train as run_training

    if not ranks.is_main():  # rank 0 reports for all
        run_training(cfg, Reporter(), resume=resume is not None)
        return
    report = Reporter.console(quiet)
    try:
        result = run_training(cfg, report, resume=resume is not None)
    except KeyboardInterrupt:  # Typer would exit 130 silently: say where the work is
        sys.stderr.write(f"\ninterrupted: {resume_hint(Path(cfg.train.run.out_dir))}\n")
        raise typer.Exit(130) from None
    if plot is not None:
        from grpo_cli.training.recorder import plot_run

        plot_run(result.run_dir, cfg, result.before, result.after, report, path=plot)
    from grpo_cli.cli.render import report_training

    report_training(report, result)


def _check(cfg: Config, model_path: str) -> None:
    """The checks `grpo train` makes before loading anything: training settings, the run folder,
    the verifiers, and that prompts and completions fit the model (`model_path`)."""
    cfg.check_training()
    from grpo_cli.algorithms.paradigms import ALGORITHMS
    from grpo_cli.pipeline import preflight
    from grpo_cli.pipeline.data import check_writable

    check_writable(Path(cfg.train.run.out_dir), "run folder (--out, train.run.out_dir)", folder=True)
    preflight.check_verifiers(cfg)
    if ALGORITHMS[cfg.algorithm].samples:  # sft trains on the dataset's solutions, not samples
        sources = [cfg.data.train] + ([cfg.data.eval] if cfg.train.run.eval_n else [])
        preflight.check_fits(cfg, model_path, sources)


def _train_staged(
    layers: ConfigLayers,
    configs: list[tuple[str, Config]],
    *,
    resume: Path | None,
    dry_run: bool,
    nproc: int | None,
    plot: Path | None,
    quiet: bool,
) -> None:
    """`grpo train` of a config with stages: each stage checked (a later stage's prompts against the
    first stage's model: its checkpoint does not exist yet), then printed (`--dry-run`) or trained."""
    from grpo_cli.config import base_config, stages_preset
    from grpo_cli.errors import UserError

    if nproc and nproc > 1:
        raise UserError("--nproc: a config with stages trains in one process for now; drop --nproc")
    if plot is not None:
        raise UserError("--plot: a staged run draws training-curves.png in each stage's folder; drop --plot")
    for i, (_, cfg) in enumerate(configs):
        _check(cfg, configs[0][1].model.path if i else _model_to_load(cfg, resume is not None))
    if dry_run:
        from grpo_cli.cli.render import stage_listing

        typer.echo(stage_listing(configs), nl=False)
        return
    import yaml

    from grpo_cli.report import Reporter
    from grpo_cli.training.stages import train_stages

    base = base_config(layers)
    out_dir = Path(base.train.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = yaml.safe_dump(stages_preset(base, configs), sort_keys=False, allow_unicode=True)
    (out_dir / "config.yaml").write_text(f"# a staged run's plan ({layers.source})\n{plan}", encoding="utf-8")
    report = Reporter.console(quiet)
    try:
        summary = train_stages(configs, out_dir, report, resume=resume is not None)
    except KeyboardInterrupt:
        sys.stderr.write(f"\ninterrupted; continue with: grpo train --resume {shlex.quote(str(out_dir))}\n")
        raise typer.Exit(130) from None
    from grpo_cli.cli.render import report_stages

    report_stages(report, summary)


def _model_to_load(cfg: Config, resume: bool) -> str:
    """The run's last checkpoint when resuming (and there is one), else the configured model."""
    from grpo_cli.training.checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(cfg.train.run.out_dir)) if resume else None
    return str(last) if last else cfg.model.path


def resume_hint(run_dir: Path) -> str:
    """Where an interrupted run's work is, and the command that continues it."""
    from grpo_cli.training.checkpoint import latest_checkpoint

    last = latest_checkpoint(run_dir)
    if last is None:
        return f"no checkpoint was written in {run_dir} (train.run.save_every sets how often); nothing to resume"
    return f"last checkpoint: {last}; continue with: grpo train --resume {shlex.quote(str(run_dir))}"
