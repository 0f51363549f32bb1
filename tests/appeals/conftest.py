"""Fixtures for appeal tests: the aetna-01 chart and its decoded denial."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from appeal_helpers import load_fixture

from ptguard.appeals.gather import AppealSource, build_source
from ptguard.fhir.load import LoadResult


@pytest.fixture(scope="session")
def aetna_load() -> LoadResult:
    return load_fixture("patient-aetna-whitfield.json")


@pytest.fixture
def aetna_source(aetna_load: LoadResult) -> AppealSource:
    return build_source(aetna_load, "cr-aetna-01")


@pytest.fixture
def source_for() -> Callable[[str, str], AppealSource]:
    def make(fixture: str, cr: str) -> AppealSource:
        return build_source(load_fixture(fixture), cr)

    return make
