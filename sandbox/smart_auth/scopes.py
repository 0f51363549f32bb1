"""SMART scopes (v1 and v2): parse, compare and decide whether a FHIR interaction is permitted."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ptguard.appeals.scopes import parse


@dataclass(frozen=True)
class Permission:
    """One resource scope: `context/Type.ops` with ops as a set of the v2 letters c r u d s."""

    context: str
    resource_type: str
    ops: frozenset[str]
    raw: str
    v1: bool

    def covers(self, resource_type: str, op: str) -> bool:
        """True when this permission allows `op` (one of c r u d s) on `resource_type`."""
        return op in self.ops and self.resource_type in ("*", resource_type)


def parse_scope(scope: str) -> Permission | None:
    """A Permission for a resource scope, None for anything else (launch, openid, offline_access, bad letters).

    The grammar is ptguard's own (`ptguard.appeals.scopes.parse`): the sandbox and the app read scopes alike.
    """
    grant = parse(scope)
    if grant is None:
        return None
    return Permission(grant.context, grant.resource_type, grant.ops, scope, grant.v1)


def split_scopes(scope: str | Iterable[str] | None) -> list[str]:
    """A scope string (space separated) or list → a list without duplicates, order kept."""
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else [s for part in scope for s in part.split()]
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def permissions(scopes: Iterable[str]) -> list[Permission]:
    """The resource permissions among `scopes`."""
    return [p for p in (parse_scope(s) for s in scopes) if p is not None]


def is_covered_by(scope: str, registered: Iterable[str]) -> bool:
    """True when `scope` is one of `registered`, or a resource scope that a registered resource scope includes."""
    registered = list(registered)
    if scope in registered:
        return True
    wanted = parse_scope(scope)
    if wanted is None:
        return False
    for perm in permissions(registered):
        same_target = perm.context == wanted.context and perm.resource_type in ("*", wanted.resource_type)
        if same_target and wanted.ops <= perm.ops:
            return True
    return False


def allowed(scopes: Iterable[str], resource_type: str, op: str) -> list[Permission]:
    """The permissions among `scopes` that allow `op` on `resource_type` (empty = forbidden)."""
    return [p for p in permissions(scopes) if p.covers(resource_type, op)]


def drop_v1_read(scopes: Iterable[str]) -> list[str]:
    """`scopes` without the v1 `.read` resource scopes (what one EHR does to apps registered with v2 scopes)."""
    kept = []
    for scope in scopes:
        perm = parse_scope(scope)
        if perm is not None and perm.v1 and scope.split("?")[0].endswith(".read"):
            continue
        kept.append(scope)
    return kept
