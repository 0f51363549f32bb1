"""Seeded mutations that put a wrong JSON type at one element of a FHIR resource (shared by the fuzz tests)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

# What a careless or hostile sender puts where something else belongs.
WRONG_VALUES: list[Any] = [5, -1.5, "x", "", [], {}, True, None, [{"a": 1}], {"coding": 5}, ["x", 3], {"reference": 7}]

Path = tuple[str | int, ...]


def element_paths(node: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every element path below node (object keys and list positions), `resourceType` itself excluded."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "resourceType":
                continue
            yield (*prefix, key)
            yield from element_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from element_paths(value, (*prefix, i))


def set_at(node: Any, path: Path, value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = copy.deepcopy(value)


def mutate(resource: dict[str, Any], rng: random.Random) -> tuple[Path, Any] | None:
    """Replace one randomly chosen element of resource (in place) with a wrong value; None when it has none."""
    paths = list(element_paths(resource))
    if not paths:
        return None
    path = rng.choice(paths)
    value = rng.choice(WRONG_VALUES)
    set_at(resource, path, value)
    return path, value
