"""SMART scopes (v2 `patient/Type.cruds`, v1 `.read`/`.write`/`.*`) compared as sets, and what they permit."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}
_RESOURCE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([A-Za-z*]+)(\?.*)?$")


@dataclass(frozen=True)
class Grant:
    """One resource scope: context, type (or *), and the operations (subset of c r u d s)."""

    context: str
    resource_type: str
    ops: frozenset[str]
    v1: bool


def parse(scope: str) -> Grant | None:
    m = _RESOURCE.match(scope.strip())
    if not m:
        return None
    context, rtype, letters, _ = m.groups()
    if letters in V1:
        return Grant(context, rtype, V1[letters], True)
    if not letters or any(c not in "cruds" for c in letters) or sorted(letters, key="cruds".index) != list(letters):
        return None
    if len(set(letters)) != len(letters):
        return None
    return Grant(context, rtype, frozenset(letters), False)


def split(scope: str | Iterable[str] | None) -> frozenset[str]:
    if scope is None:
        return frozenset()
    items = scope.split() if isinstance(scope, str) else [s for part in scope for s in part.split()]
    return frozenset(items)


@dataclass(frozen=True)
class Scopes:
    """A granted scope set."""

    items: frozenset[str]

    @classmethod
    def of(cls, scope: str | Iterable[str] | None) -> Scopes:
        return cls(split(scope))

    def allows(self, resource_type: str, op: str) -> bool:
        """True when some patient/ or user/ (or system/) scope covers `op` on `resource_type`."""
        return any(
            g is not None and op in g.ops and g.resource_type in ("*", resource_type)
            for g in (parse(s) for s in self.items)
        )

    def can_read(self, resource_type: str) -> bool:
        return self.allows(resource_type, "r") or self.allows(resource_type, "s")

    def can_create(self, resource_type: str) -> bool:
        return self.allows(resource_type, "c")

    def missing(self, asked: Iterable[str]) -> list[str]:
        """Scopes asked for that the grant does not cover (a v2 grant covers the v1 scope it equals, and back)."""
        out = []
        for s in asked:
            if s in self.items:
                continue
            g = parse(s)
            if g is not None and all(self.allows(g.resource_type, op) for op in g.ops):
                continue
            out.append(s)
        return sorted(out)

    def __contains__(self, scope: object) -> bool:
        return scope in self.items

    def __str__(self) -> str:
        return " ".join(sorted(self.items))
