"""A real, non-editable install (pip --target) works from any directory: presets found, the built-in
verifier registered through its entry point, and no top-level `verifiers` package installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", "tests", "benchmarks"}

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("pip") is None, reason="pip is not available in this environment"),
    pytest.mark.slow,  # a pip install of the package
]


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed into a fresh folder; built from a copy so the checkout stays untouched."""
    base = tmp_path_factory.mktemp("install")
    source, target = base / "src", base / "target"
    shutil.copytree(ROOT, source, ignore=_ignore)
    return pip_install_to(source, target)


def pip_install_to(source: Path, target: Path) -> Path:
    """`pip install --target` of a source folder, offline and without dependencies; returns target."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _python(code: str, target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_package_imports_from_the_install(installed, tmp_path):
    proc = _python(
        "import grpo_cli, grpo_verifiers; print(grpo_cli.__file__); print(grpo_verifiers.__file__)", installed, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(installed.resolve()), line


def test_presets_list_from_another_directory(installed, tmp_path):
    proc = _python("", installed, tmp_path, "-m", "grpo_cli", "presets", "list")
    assert proc.returncode == 0, proc.stderr
    assert any(line.split()[0] == "tiny" for line in proc.stdout.splitlines() if line.strip())
    shipped = sorted(p.name for p in (ROOT / "presets").glob("*.yaml"))
    assert sorted(p.name for p in (installed / "grpo_cli" / "presets").glob("*.yaml")) == shipped
    proc = _python(
        "from grpo_cli.config import load_config; print(load_config('tiny').sampling.backend)", installed, tmp_path
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "hf", proc.stderr


def test_no_top_level_verifiers_package(installed, tmp_path):
    assert not (installed / "verifiers").exists()
    proc = _python("import verifiers", installed, tmp_path)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
    assert _python("import grpo_verifiers.math", installed, tmp_path).returncode == 0


def test_math_entry_point_registered_in_the_install(installed, tmp_path):
    code = (
        "import sys\n"
        "from importlib.metadata import distributions\n"
        "(dist,) = [d for d in distributions(path=[sys.argv[1]]) if d.metadata['Name'] == 'grpo-cli']\n"
        "eps = {ep.name: ep for ep in dist.entry_points if ep.group == 'grpo.verifiers'}\n"
        "print(eps['math'].value)\n"
        "from grpo_verifiers.base import Verifier\n"
        "assert issubclass(eps['math'].load(), Verifier)\n"
        "print([ep.value for ep in dist.entry_points if ep.group == 'console_scripts'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(installed)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    value, scripts = proc.stdout.splitlines()
    assert value == "grpo_verifiers.math:MathVerifier"
    assert "grpo_cli.cli.main:run" in scripts
