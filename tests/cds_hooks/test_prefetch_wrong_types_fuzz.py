"""Fuzz: one prefetched element (or draft order) given a wrong JSON type; every service answers, never a 500.

No fhirServer is sent, so the answer comes from the prefetch alone, and PTGUARD_DEBUG=1 makes the per-encounter
safety net re-raise: a pass means the readers cope with the element, not that a net caught a crash.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from cdshelpers import (
    SCENARIOS,
    TokenFactory,
    assert_valid_response,
    fake_for,
    full_prefetch,
    hook_request,
    patient_of,
    post,
    therapy_draft_orders,
)
from wrong_types import element_paths, mutate

ORDER_SIGN = "ptguard-97530-order-sign"
DENIALS = "ptguard-denials"
SERVICES = ["ptguard-97530-signing", "ptguard-97530-note-sign", "ptguard-97530-patient-view", DENIALS, ORDER_SIGN]
WITHOUT_ENCOUNTER = (ORDER_SIGN, DENIALS)
CALLS_PER_SEED = 120


@pytest.mark.parametrize("seed", range(3))
def test_a_wrong_json_type_in_the_prefetch_gets_an_answer(
    seed: int, client: Any, token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    rng = random.Random(seed)
    prefetches: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
    statuses: dict[int, int] = {}
    failures: list[Any] = []
    for _ in range(CALLS_PER_SEED):
        scenario = rng.choice(SCENARIOS)
        service = rng.choice(SERVICES)
        key = (scenario["id"], service)
        if key not in prefetches:
            fake = fake_for(scenario["id"])
            pid = patient_of(fake, scenario["encounter"])
            ctx: dict[str, Any] = {"userId": "Practitioner/prac-okafor", "patientId": pid}
            if service not in WITHOUT_ENCOUNTER:
                ctx["encounterId"] = scenario["encounter"]
            prefetches[key] = (pid, scenario["encounter"], full_prefetch(fake, service, ctx))
        pid, enc, prefetch = prefetches[key]
        prefetch = copy.deepcopy(prefetch)
        extra: dict[str, Any] = {}
        if service == ORDER_SIGN:
            extra["draftOrders"] = therapy_draft_orders(pid)
        targets = [v for v in prefetch.values() if isinstance(v, dict)] + list(extra.values())
        target = rng.choice(targets)
        # a resource inside a Bundle, or the Bundle/resource itself
        inner = [e["resource"] for e in target.get("entry") or [] if isinstance(e, dict) and "resource" in e]
        victim = rng.choice(inner) if inner and rng.random() < 0.85 else target
        if not list(element_paths(victim)):
            continue
        change = mutate(victim, rng)
        body = hook_request(
            service,
            patient=pid,
            encounter=None if service in WITHOUT_ENCOUNTER else enc,
            prefetch=prefetch,
            server=None,
            **extra,
        )
        response = post(client, token, service, body)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        what = (scenario["id"], service, victim.get("resourceType"), change)
        if response.status_code not in (200, 400, 412):
            failures.append((what, response.status_code))
        elif response.status_code == 200:
            assert_valid_response(response.json)
    assert not failures, failures
    assert statuses.get(200, 0) > CALLS_PER_SEED // 2, statuses
