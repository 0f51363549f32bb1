"""End to end in real Chromium: sign notes in the EHR simulator, see cards, launch the SMART app, download an appeal PDF."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from pypdf import PdfReader

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _sign(page: Any, simulator: str, encounter: str) -> None:
    page.goto(simulator)
    row = page.locator(f'tr[data-encounter="{encounter}"]')
    row.get_by_role("button", name="Sign note").click()
    page.wait_for_url(re.compile(r"/calls/"))
    assert page.locator("#call-error").count() == 0, page.locator("#call-error").inner_text()


def _feedback_rows(db_url: str) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from ptguard.store.db import session_scope
    from ptguard.store.models import CdsFeedback

    with session_scope(db_url) as session:
        return [(row.card_uuid, row.outcome) for row in session.scalars(select(CdsFeedback))]


def test_sign_notes_launch_the_app_and_download_an_appeal(demo_stack: Any, page: Any) -> None:
    urls = demo_stack.urls
    simulator = urls.simulator
    # Works offline: every request the pages make (scripts, styles, fonts, images, launches) stays on loopback.
    hosts: set[str] = set()
    page.context.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or request.url[:20]))
    # The app's Content-Security-Policy blocks nothing the pages need (a violation is logged to the console).
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

    # 1. cigna-01: 31 timed minutes billed as 3 units of 97530 → a critical units card with a suggestion.
    _sign(page, simulator, "enc-cigna-01")
    units = page.locator("article.card[data-indicator='critical']").filter(has_text=re.compile(r"\bunits?\b"))
    assert units.count() >= 1, page.content()
    units_card = units.first
    assert "2 units" in units_card.locator(".summary").inner_text()
    assert units_card.locator(".source").inner_text().strip() != "Source:"
    # detail markdown rendered as HTML (no raw markdown markers, no raw tags)
    assert "**" not in units_card.locator(".detail").inner_text()
    card_uuid = units_card.get_attribute("data-card")
    units_card.locator("button.suggestion").first.click()
    page.wait_for_url(re.compile(r"/calls/"))
    assert "feedback sent (accepted)" in page.locator("#messages").inner_text()
    assert (card_uuid, "accepted") in _feedback_rows(demo_stack.db_url)

    # 2. uhc-01: plain strengthening billed as 97530 → cards from the payer's policy (source = the payer).
    _sign(page, simulator, "enc-uhc-01")
    payer = page.locator("article.card").filter(has=page.locator(".source", has_text="UnitedHealthcare"))
    assert payer.count() >= 1, page.content()
    payer_card = payer.first
    assert payer_card.get_attribute("data-indicator") in ("critical", "warning")
    overridden_uuid = payer_card.get_attribute("data-card")
    payer_card.locator("form.override select").select_option(index=0)
    payer_card.locator("button.override-button").click()
    page.wait_for_url(re.compile(r"/calls/"))
    assert "feedback sent (overridden)" in page.locator("#messages").inner_text()
    assert (overridden_uuid, "overridden") in _feedback_rows(demo_stack.db_url)

    # 3. The card's SMART link performs an EHR launch: the app opens on the documentation check.
    page.locator("article.card").first.locator("button.smart-link").first.click()
    page.wait_for_url(re.compile(r"/app/check/"))
    assert page.locator("h1").inner_text().strip() == "Documentation check"
    assert urls.ptguard in page.url

    # 4. Billing worklist: aetna-01 (CARC 50) → Open appeal → the denied claim → the letter → the PDF.
    page.goto(simulator)
    page.locator("#tab-worklist").click()
    row = page.locator('tr[data-claim-response="cr-aetna-01"]')
    assert row.get_attribute("data-carcs").split() == ["50"]
    row.get_by_role("button", name="Open appeal").click()
    page.wait_for_url(re.compile(r"/app/claim/"))
    assert "Denied claim" in page.locator("h1").inner_text()
    page.get_by_role("button", name=re.compile("Build the appeal letter")).click()
    page.wait_for_url(re.compile(r"/app/appeal/"))
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the PDF packet").click()
    download = info.value
    data = download.path().read_bytes()
    assert data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 1
    text = " ".join(p.extract_text() or "" for p in reader.pages)
    assert "97530" in text
    assert "2 November 2026" in text  # the date of service, from the chart
    assert "CARC 50" in text and "medically necessary" in text  # the denial reason, explained
    assert "19 May 2027" in text and "2560.503-1" in text  # the deadline and the rule behind it
    assert next(o.title for o in reader.outline if hasattr(o, "title")).startswith("First-level appeal")

    # 5. The app's own worklist (the biller's front door) lists the fixture denials the EHR's billing list shows.
    page.goto(urls.ptguard.rstrip("/") + "/app/")
    denials = page.locator("table", has=page.locator("caption", has_text="Open denials")).locator("tbody tr")
    assert denials.count() >= 3, page.content()
    assert page.get_by_role("link", name="Open the appeal view").count() >= 3
    assert "Whitfield" in denials.filter(has_text="Aetna").first.inner_text()
    assert hosts and hosts <= {"127.0.0.1", "localhost"}, f"requests left the machine: {sorted(hosts)}"
    assert not blocked, blocked
