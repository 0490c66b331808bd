"""The verifier registry: the `grpo.verifiers` entry-point group, built-ins included (pyproject.toml).

`discover()` loads every entry point and reports each one, broken ones with their error, for
`grpo verifiers` to list. `load_verifier(name, options)` loads only the entry point it needs, so a
broken or heavy plugin costs nothing until it is asked for.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from grpo_verifiers.base import Verifier

from grpo_cli.errors import UserError

GROUP = "grpo.verifiers"


@dataclass(frozen=True)
class PluginInfo:
    """One entry point of the group.

    name: the verifier's name (`--verifier NAME`); target: `module:attr`; package: the distribution
    that declares it, `"name version"`; status: `"ok"` or `"error"`; error: why it did not load
    (an import error, not a `Verifier` subclass, or a name already taken by an earlier plugin).
    """

    name: str
    target: str
    package: str
    status: str
    error: str | None = None
    cls: type[Verifier] | None = field(default=None, repr=False, compare=False)


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=GROUP))


def _package(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _load(ep: EntryPoint) -> PluginInfo:
    package = _package(ep)
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure is this plugin's, reported, not raised
        return PluginInfo(ep.name, ep.value, package, "error", _one_line(f"{type(exc).__name__}: {exc}"))
    if not (isinstance(obj, type) and issubclass(obj, Verifier)):
        return PluginInfo(ep.name, ep.value, package, "error", f"{ep.value} is not a grpo_verifiers.Verifier subclass")
    return PluginInfo(ep.name, ep.value, package, "ok", cls=obj)


def discover() -> list[PluginInfo]:
    """Every registered verifier, each loaded; for a duplicate name the first one wins and the
    later ones are reported as errors."""
    infos: list[PluginInfo] = []
    first: dict[str, PluginInfo] = {}
    for ep in _entry_points():
        if ep.name in first:
            winner = first[ep.name]
            error = f"duplicate name {ep.name!r}: {winner.target} from {winner.package} is used instead"
            infos.append(PluginInfo(ep.name, ep.value, _package(ep), "error", error))
            continue
        first[ep.name] = info = _load(ep)
        infos.append(info)
    return infos


def load_verifier(name: str, options: dict[str, Any]) -> Verifier:
    """Construct the verifier registered as `name` with keyword `options`; UserError when the name
    is unknown, the plugin fails to import, or the options are not accepted."""
    eps = _entry_points()
    ep = next((ep for ep in eps if ep.name == name), None)
    if ep is None:
        raise _unknown(name, eps)
    info = _load(ep)
    if info.cls is None:
        raise UserError(f"verifier {name!r} ({info.target}, from {info.package}) failed to load: {info.error}")
    try:
        return info.cls(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(_one_line(f"verifier {name!r}: bad options {options}: {exc}")) from None


def check_names(names: list[str]) -> None:
    """UserError for the first name no installed package registers (nothing is imported)."""
    eps = _entry_points()
    for name in names:
        if not any(ep.name == name for ep in eps):
            raise _unknown(name, eps)


def _unknown(name: str, eps: list[EntryPoint]) -> UserError:
    names = sorted({ep.name for ep in eps})
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(
        f"unknown verifier {name!r}{hint}; available: {', '.join(names) or 'none'}"
        f" (a plugin registers under the {GROUP!r} entry-point group of an installed package)"
    )
