"""`grpo train --nproc N`: the same command again as N ranks of this machine under torchrun."""

from __future__ import annotations

import sys


def without_nproc(args: list[str]) -> list[str]:
    """The command line minus `--nproc N` / `--nproc=N`: torchrun's own parser would take `--nproc`
    anywhere on its command line for an abbreviation of its `--nproc-per-node`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def relaunch(nproc: int, args: list[str]) -> int:
    """`python -m grpo_cli ARGS` as `nproc` ranks of this machine under torchrun; its exit code."""
    import subprocess

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "grpo_cli",
        *args,
    ]
    return subprocess.call(command)
