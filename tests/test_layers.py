"""The layers of the code base (docs/design.md, "Layers"): every import, including those inside
functions, goes to the importing module's own layer or a lower one, no modules import each
other in a cycle, and no module imports another module's private name (a `_name` of a module; a
private module `pkg._mod` is importable from inside `pkg` only).

Layers, lowest first (a module belongs to the first prefix that matches it, longest prefix first):

 0. algorithms           grpo_cli.algorithms: the math, pure functions over tensors
 1. contracts            grpo_cli.records (the records between stages), grpo_verifiers.base
 2. root leaves          grpo_cli (package), config, errors, report, plugins, ranks
 3. builtin              grpo_cli.builtin: the arithmetic task and the tiny model
 4. verifiers            grpo_verifiers.*: the built-in reward plugins
 5. models               grpo_cli.models: loading, grpo's own Llama-family implementation
 6. perf                 grpo_cli.perf: blocked LM head, prompt sharing, in-place gradients, heap
 7. sampling             grpo_cli.sampling: generation backends
 8. pipeline             grpo_cli.pipeline: data, the sample stage, scoring, evaluation, metrics, plots
 9. training             grpo_cli.training: the loop, batching, checkpoints, optimizer, wrapping
10. interfaces           grpo_cli.cli, grpo_cli.__main__, grpo_verifiers.testing (the plugin kit)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, ...]] = [
    ("grpo_cli.algorithms",),
    ("grpo_cli.records", "grpo_verifiers.__init__", "grpo_verifiers.base"),
    (
        "grpo_cli.__init__",
        "grpo_cli.config",
        "grpo_cli.errors",
        "grpo_cli.report",
        "grpo_cli.plugins",
        "grpo_cli.ranks",
        "grpo_cli.presets",
    ),
    ("grpo_cli.builtin",),
    ("grpo_verifiers",),
    ("grpo_cli.models",),
    ("grpo_cli.perf",),
    ("grpo_cli.sampling",),
    ("grpo_cli.pipeline",),
    ("grpo_cli.training",),
    ("grpo_cli.cli", "grpo_cli.__main__", "grpo_verifiers.testing"),
]

PACKAGES = {"grpo_cli": ROOT / "grpo_cli", "grpo_verifiers": ROOT / "verifiers", "grpo_cli.presets": ROOT / "presets"}


def layer_of(module: str) -> int:
    """The layer index of a module (its package's `__init__` counts as `pkg.__init__`)."""
    best, found = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return found


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project (`pkg.__init__` for a package)."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            if package == "grpo_cli" and parts and parts[0] == "presets":
                continue
            out[name] = path
    return out


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """The project modules that `source` imports anywhere (module level, functions, branches)."""
    is_package = module.endswith(".__init__")
    package = module.rsplit(".", 1)[0] if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        for candidate in (name, name + ".__init__"):
            if candidate in known:
                return candidate
        return None

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            target = resolve(name)
            for alias in node.names:  # `from pkg import module` imports the module
                sub = resolve(f"{name}.{alias.name}")
                if sub:
                    found.add(sub)
                elif target:
                    found.add(target)
    found.discard(module)
    return found


def graph(sources: dict[str, str]) -> dict[str, set[str]]:
    known = set(sources)
    return {m: imports_of(m, s, known) for m, s in sources.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Upward imports and import cycles, as readable lines."""
    problems = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                problems.append(
                    f"upward import: {module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
                )
    # Cycles: depth-first search with colours; report each cycle once by its path.
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                problems.append("import cycle: " + " -> ".join(cycle))
            elif nxt not in colour:
                visit(nxt)
        stack.pop()
        colour[node] = 2

    for node in sorted(edges):
        if node not in colour:
            visit(node)
    return problems


def test_the_project_has_no_upward_import_and_no_cycle():
    modules = project_modules()
    assert "grpo_cli.training.trainer" in modules and "grpo_verifiers.math" in modules
    edges = graph({m: p.read_text(encoding="utf-8") for m, p in modules.items()})
    assert sum(len(t) for t in edges.values()) > 50  # the walk sees the imports at all
    assert violations(edges) == []


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (  # the loss reaching up into the trainer, inside a function
            {
                "grpo_cli.algorithms.loss": "def f():\n    from grpo_cli.training import trainer\n",
                "grpo_cli.training.trainer": "from grpo_cli.algorithms.loss import f\n",
            },
            [
                "upward import: grpo_cli.algorithms.loss (layer 0) imports grpo_cli.training.trainer (layer 9)",
                "import cycle: grpo_cli.algorithms.loss -> grpo_cli.training.trainer -> grpo_cli.algorithms.loss",
            ],
        ),
        (  # two pipeline modules importing each other: same layer, but a cycle
            {
                "grpo_cli.pipeline.data": "import grpo_cli.pipeline.scoring\n",
                "grpo_cli.pipeline.scoring": "def g():\n    from grpo_cli.pipeline import data\n",
            },
            ["import cycle: grpo_cli.pipeline.data -> grpo_cli.pipeline.scoring -> grpo_cli.pipeline.data"],
        ),
        (  # a relative import resolves like an absolute one
            {
                "grpo_cli.models.llama": "from . import loading\n",
                "grpo_cli.models.loading": "",
                "grpo_cli.cli.main": "from ..models import llama\n",
            },
            [],
        ),
    ],
)
def test_the_check_catches_upward_imports_and_cycles(sources, expected):
    assert violations(graph(sources)) == expected


def private_imports(module: str, source: str, packages: set[str]) -> list[str]:
    """`module`'s imports of another module's private name: `from m import _x` where `m` is a module
    other than `module`, or a private module `pkg._m` from outside `pkg` (`packages`: the dotted
    names of the project's packages). Absolute imports only, as the project writes them."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])  # a private part belongs to what holds it
                inside = module.startswith(owner + ".") if owner in packages else module == owner
                if part.startswith("_") and not part.startswith("__") and not inside:
                    found.append(f"{module} imports {name}")
                    break
    return found


def test_no_module_imports_another_modules_private_name():
    modules = project_modules()
    packages = {m.removesuffix(".__init__") for m in modules if m.endswith(".__init__")}
    found = [v for m, p in sorted(modules.items()) for v in private_imports(m, p.read_text(encoding="utf-8"), packages)]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("grpo_cli.training.trainer", "from grpo_cli.sampling.hf import _encode\n", ["_encode"]),
        ("grpo_cli.training.reward_model", "from grpo_verifiers._prm_hf import HFBackend\n", ["_prm_hf"]),
        ("grpo_cli.cli.main", "import grpo_cli.sampling._private\n", ["_private"]),
        ("grpo_verifiers.prm", "from grpo_verifiers._watchdog import Watchdog\n", []),  # inside its package
        ("grpo_verifiers.code", "from grpo_verifiers import _sandbox\n", []),
        ("grpo_verifiers.prm", "from grpo_verifiers.math import _Parser\n", ["_Parser"]),  # another module's
        ("grpo_cli.sampling.hf", "from grpo_cli.sampling.base import Sampler\n", []),
    ],
)
def test_the_check_catches_private_imports(module, source, expected):
    packages = {"grpo_cli", "grpo_cli.sampling", "grpo_cli.training", "grpo_cli.cli", "grpo_verifiers"}
    found = private_imports(module, source, packages)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found)), found


def test_every_module_is_in_a_layer():
    for module in project_modules():
        layer_of(module)


def test_the_training_loop_stays_readable():
    """Issue 21: the loop reads in a minute (trainer.py at most 350 lines) and no function in
    training/ is over 60 lines; a new stage goes into a module of its own."""
    folder = ROOT / "grpo_cli" / "training"
    assert len((folder / "trainer.py").read_text(encoding="utf-8").splitlines()) <= 350
    long = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
