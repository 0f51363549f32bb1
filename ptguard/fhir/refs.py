"""Resolve FHIR references (relative, absolute, urn:uuid, contained #id, conditional) within loaded data."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ptguard.fhir.load import LoadResult, Resource, identity_keys

_TYPE_ID = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?/?$")


def element(resource: Any, key: str) -> dict[str, Any]:
    """resource[key] when it is a JSON object, else an empty dict (tolerates malformed data)."""
    value = resource.get(key) if isinstance(resource, dict) else None
    return value if isinstance(value, dict) else {}


def elements(resource: Any, key: str) -> list[dict[str, Any]]:
    """The JSON objects in the list resource[key]; [] when it is absent or not a list (items of another type skipped)."""
    value = resource.get(key) if isinstance(resource, dict) else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def strings(resource: Any, key: str) -> list[str]:
    """The strings in the list resource[key]; [] when it is absent or not a list (items of another type skipped)."""
    value = resource.get(key) if isinstance(resource, dict) else None
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def integers(resource: Any, key: str) -> list[int]:
    """The integers (not booleans) in the list resource[key]; [] when it is absent or not a list."""
    value = resource.get(key) if isinstance(resource, dict) else None
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, int) and not isinstance(item, bool)]


def text(value: Any) -> str | None:
    """value when it is a string, else None: a code, status or id of the wrong JSON type counts as absent."""
    return value if isinstance(value, str) else None


def wrong_type(resource: Any, key: str, expected: type) -> str | None:
    """`key is not a list` (or object / string) when resource[key] is present with another JSON type, else None."""
    value = resource.get(key) if isinstance(resource, dict) else None
    if value is None or isinstance(value, expected):
        return None
    return f"{key} is not {_TYPE_NAMES.get(expected, expected.__name__)}"


_TYPE_NAMES: dict[type, str] = {list: "a list", dict: "an object", str: "a string"}


def ref_string(value: Any) -> str | None:
    """The `reference` string of a Reference (or a bare string), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return str(value["reference"])
    return None


def label(resource: Resource) -> str:
    """`Type/id` of a resource, the form used in evidence and messages."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


class ResourceIndex:
    """Every resource of a load, reachable by Type/id, fullUrl or urn:uuid, and by type.

    Built from a raw list (say, the pages of a server search, where an _include'd resource recurs), another copy of
    a resource already indexed (same Type/id or fullUrl) is read once. `from_load` skips that check: the loader
    (LoadResult.add) has already read each resource once and chosen between differing copies.
    """

    def __init__(
        self,
        resources: Iterable[Resource],
        full_urls: Iterable[str | None] | None = None,
        *,
        deduplicate: bool = True,
    ) -> None:
        self._by_key: dict[str, Resource] = {}
        self._by_type: dict[str, list[Resource]] = defaultdict(list)
        self._label: dict[int, str] = {}
        urls = list(full_urls) if full_urls is not None else []
        for i, res in enumerate(resources):
            rtype = str(res.get("resourceType"))
            full_url = urls[i] if i < len(urls) else None
            rid = res.get("id")
            if deduplicate and any(self._by_key.get(k, res) is not res for k in identity_keys(res, full_url)):
                continue  # another copy of this resource is indexed already: read it once
            self._by_type[rtype].append(res)
            if isinstance(rid, str) and rid:
                self._by_key.setdefault(f"{rtype}/{rid}", res)
                self._label[id(res)] = f"{rtype}/{rid}"
            if full_url:
                self._by_key.setdefault(full_url, res)
                if id(res) not in self._label:
                    self._label[id(res)] = full_url
                m = _TYPE_ID.search(full_url)
                if m and not rid:
                    self._by_key.setdefault(f"{m.group(1)}/{m.group(2)}", res)

    @classmethod
    def from_load(cls, result: LoadResult) -> ResourceIndex:
        return cls(result.resources, result.full_urls, deduplicate=False)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_type.values())

    def of_type(self, rtype: str) -> list[Resource]:
        return self._by_type.get(rtype, [])

    def all(self) -> Iterator[Resource]:
        for items in self._by_type.values():
            yield from items

    def label(self, resource: Resource) -> str:
        """The reference to cite for a resource: Type/id, else its fullUrl, else Type."""
        return self._label.get(id(resource)) or label(resource)

    def get(self, rtype: str, rid: str) -> Resource | None:
        return self._by_key.get(f"{rtype}/{rid}")

    def resolve(self, reference: Any, source: Resource | None = None) -> Resource | None:
        """The resource a reference points to, or None when it is not in this data."""
        ref = ref_string(reference)
        if not ref:
            return None
        if ref.startswith("#"):
            return _contained(source, ref[1:])
        found = self._by_key.get(ref)
        if found is not None:
            return found
        if "?" in ref:
            return self._conditional(ref)
        m = _TYPE_ID.search(ref)
        if m:
            return self._by_key.get(f"{m.group(1)}/{m.group(2)}")
        return None

    def _conditional(self, ref: str) -> Resource | None:
        rtype, _, query = ref.partition("?")
        params = parse_qs(query)
        for ident in params.get("identifier", []):
            system, _, value = ident.rpartition("|")
            for res in self.of_type(rtype):
                for i in elements(res, "identifier"):
                    if i.get("value") == value and (not system or i.get("system") == system):
                        return res
        return None

    def referencing(self, rtype: str, path: str, target: Resource) -> list[Resource]:
        """Resources of `rtype` whose reference at `path` (dotted, lists walked) points at `target`."""
        out = []
        for res in self.of_type(rtype):
            for value in walk(res, path):
                if self.resolve(value, res) is target:
                    out.append(res)
                    break
        return out


def walk(resource: Any, path: str) -> Iterator[Any]:
    """Values at a dotted path, descending into lists (a tiny subset of FHIRPath)."""
    current: list[Any] = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    yield from current


def _contained(source: Resource | None, rid: str) -> Resource | None:
    if not source:
        return None
    if not rid:
        return source
    for c in elements(source, "contained"):
        if c.get("id") == rid:
            return c
    return None


def same_server_path(url: str) -> str:
    """The path of an absolute URL, for comparing references across host spellings."""
    return urlsplit(url).path.rstrip("/")
