"""`grpo model build-tiny | import | merge`: the reproducible build of the shipped default model; GGUF
files into Hugging Face folders; a LoRA checkpoint as a plain model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import SetOpt, ThreadsOpt, resolve_config

app = typer.Typer(help="Models: the shipped tiny model, GGUF import, LoRA merge.", no_args_is_help=True)


@app.command("build-tiny")
def build_tiny(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the model to.")] = Path("tiny-model"),
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Supervised training steps (default: the shipped build's).")] = None,
    threads: Annotated[int, typer.Option(help="Torch CPU threads (the shipped model was built with 2).")] = 2,
) -> None:
    """Train the tiny arithmetic model from scratch (supervised), as shipped in grpo_cli/builtin/tiny-model."""
    from grpo_cli.builtin.tiny import build_tiny_model

    kwargs = {"steps": steps} if steps is not None else {}
    stats = build_tiny_model(out, seed=seed, threads=threads, log=typer.echo, **kwargs)
    typer.echo(f"wrote {out}: {stats}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A GGUF model file (llama.cpp's format).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New (or empty) folder to write the HF model to.")],
) -> None:
    """De-quantize a GGUF model (needs `pip install 'grpo-cli[gguf]'`) into a plain Hugging Face folder
    (float32 safetensors, config, tokenizer with its chat template) that every command loads."""
    from grpo_cli.models.gguf import import_gguf

    import_gguf(file, out)
    typer.echo(f"wrote {out}")


@app.command("merge")
def merge(
    checkpoint: Annotated[
        Path, typer.Argument(help="A LoRA run's checkpoint folder (adapter_config.json, adapter_model.safetensors).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New (or empty) folder for the merged model.")],
    threads: ThreadsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Merge a LoRA checkpoint's adapter into its base model: a plain Hugging Face folder (grpo eval, vLLM).
    Its base is the one adapter_config.json names, or `--set model.base=PATH`."""
    from dataclasses import replace

    from grpo_cli.models.loading import export_merged, setup_torch

    setup_torch(threads or 0)
    model = replace(resolve_config(None, set_).model, device="cpu", threads=threads or 0)
    path = export_merged(checkpoint, out, model)
    typer.echo(f"wrote {path}: {checkpoint} merged into its base model")
