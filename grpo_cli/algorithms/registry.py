"""Named variants: one registry per list of names (KL estimators, loss aggregations, importance
ratios, advantage kinds and scalings, learning-rate schedules, algorithms).

A variant is added by registering it beside the others (`@KL_ESTIMATORS.register("k3")`); the
config validates a name against the registry that owns it, so no second hand-kept tuple of names
exists anywhere. Looking up an unknown name raises an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no entry of the registry has; the message lists the valid names."""


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-only mapping from names to variants, filled by `register`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call: `REG.register("x")(value)`) adding `name`; a name once only."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = value
            return value

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
