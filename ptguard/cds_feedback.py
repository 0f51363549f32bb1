"""CDS card records and feedback: store them idempotently, and report accept/override rates per criterion."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ptguard.cds import CdsRequestError
from ptguard.config import load_settings
from ptguard.store.db import session_scope
from ptguard.store.models import CardIssued, CdsFeedback

OUTCOMES = ("accepted", "overridden")
logger = logging.getLogger("ptguard.cds")


@dataclass(frozen=True)
class CardRecord:
    """A card as returned: its uuid, the criterion behind it and the payer."""

    uuid: str
    criterion_id: str
    payer_id: str | None


@dataclass(frozen=True)
class FeedbackItem:
    """One validated feedback entry."""

    card: str
    outcome: str
    timestamp: str
    accepted_suggestions: tuple[str, ...]
    override_code: str | None
    override_display: str | None
    comment: str | None


def record_cards(database_url: str, service_id: str, hook_instance: str | None, cards: Iterable[CardRecord]) -> int:
    """Store the cards of one response (so later feedback can be tied to its criterion)."""
    rows = _rows(service_id, hook_instance, cards)
    if not rows:
        return 0
    with session_scope(database_url) as session:
        session.add_all(rows)
    return len(rows)


class CardRecorder:
    """Records issued cards off the request path: a background thread writes them in batches.

    A database commit (an fsync) costs more than the check itself, and feedback on a card comes seconds later
    at the earliest. The thread starts on demand and ends after `idle_seconds` without work.
    """

    def __init__(self, database_url: str, *, idle_seconds: float = 2.0) -> None:
        self.database_url = database_url
        self.idle_seconds = idle_seconds
        self._queue: queue.Queue[tuple[str, str | None, list[CardRecord]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self._ready = False

    def submit(self, service_id: str, hook_instance: str | None, cards: list[CardRecord]) -> None:
        if not cards:
            return
        if not self._ready:
            # Migrate (once) in the caller's thread: two threads migrating one SQLite file at once would collide.
            with session_scope(self.database_url):
                pass
            self._ready = True
        self._queue.put((service_id, hook_instance, cards))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ptguard-card-recorder", daemon=True)
                self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted card is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < 200:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with session_scope(self.database_url) as session:
                    for service_id, hook_instance, cards in batch:
                        session.add_all(_rows(service_id, hook_instance, cards))
            except Exception as exc:
                self.failures += 1
                logger.warning("could not record %d issued card batch(es) (%s)", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()


def _rows(service_id: str, hook_instance: str | None, cards: Iterable[CardRecord]) -> list[CardIssued]:
    return [
        CardIssued(
            uuid=c.uuid,
            service_id=service_id,
            criterion_id=c.criterion_id,
            payer_id=c.payer_id,
            hook_instance=(hook_instance or "")[:64] or None,
        )
        for c in cards
    ]


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """Validate a feedback request body (`{"feedback": [...]}`); CdsRequestError says what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise CdsRequestError("'feedback' must be a non-empty list", where="feedback", code="required")
    out: list[FeedbackItem] = []
    for i, raw in enumerate(body["feedback"]):
        where = f"feedback[{i}]"
        if not isinstance(raw, dict):
            raise CdsRequestError("not an object", where=where)
        card, outcome, ts = raw.get("card"), raw.get("outcome"), raw.get("outcomeTimestamp")
        if not isinstance(card, str) or not card or len(card) > 64:
            raise CdsRequestError("'card' must be the card's uuid", where=f"{where}.card")
        if outcome not in OUTCOMES:
            raise CdsRequestError("'outcome' must be accepted or overridden", where=f"{where}.outcome")
        if not isinstance(ts, str) or not ts or len(ts) > 40:
            raise CdsRequestError("'outcomeTimestamp' is required", where=f"{where}.outcomeTimestamp")
        if not _instant(ts):
            raise CdsRequestError(
                "'outcomeTimestamp' is not a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)",
                where=f"{where}.outcomeTimestamp",
            )
        accepted: list[str] = []
        for j, s in enumerate(raw.get("acceptedSuggestions") or []):
            if not isinstance(s, dict) or not isinstance(s.get("id"), str):
                raise CdsRequestError(
                    "each accepted suggestion needs an 'id'", where=f"{where}.acceptedSuggestions[{j}]"
                )
            accepted.append(s["id"])
        code = display = comment = None
        reason = raw.get("overrideReason")
        if reason is not None:
            if not isinstance(reason, dict):
                raise CdsRequestError("'overrideReason' is not an object", where=f"{where}.overrideReason")
            coding = reason.get("reason")
            if coding is not None and not isinstance(coding, dict):
                raise CdsRequestError("'overrideReason.reason' is not a Coding", where=f"{where}.overrideReason")
            if isinstance(coding, dict):
                code = str(coding["code"])[:100] if coding.get("code") else None
                display = str(coding["display"])[:300] if coding.get("display") else None
            if isinstance(reason.get("userComment"), str):
                comment = reason["userComment"][:2000]
        out.append(FeedbackItem(card, str(outcome), ts, tuple(accepted), code, display, comment))
    return out


_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def _instant(text: str) -> bool:
    if not _INSTANT.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(re.sub(r"\.\d+", "", text).replace("Z", "+00:00"))  # a real date and time
    except ValueError:
        return False
    return True


def unknown_cards(database_url: str, service_id: str, items: Sequence[FeedbackItem]) -> list[int]:
    """Indexes of the items whose card this service never issued (the store records every card it returns)."""
    wanted = {item.card for item in items}
    with session_scope(database_url) as session:
        known = set(
            session.scalars(
                select(CardIssued.uuid).where(CardIssued.uuid.in_(wanted), CardIssued.service_id == service_id)
            )
        )
    return [i for i, item in enumerate(items) if item.card not in known]


def store_feedback(database_url: str, service_id: str, items: Sequence[FeedbackItem]) -> tuple[int, int]:
    """Store feedback; an item already stored (same service, card, outcome and time) is skipped. → (new, repeats)."""
    new = repeats = 0
    with session_scope(database_url) as session:
        for item in items:
            exists = session.scalar(
                select(CdsFeedback.id).where(
                    CdsFeedback.service_id == service_id,
                    CdsFeedback.card_uuid == item.card,
                    CdsFeedback.outcome == item.outcome,
                    CdsFeedback.outcome_timestamp == item.timestamp,
                )
            )
            if exists is not None:
                repeats += 1
                continue
            try:
                with session.begin_nested():
                    session.add(
                        CdsFeedback(
                            service_id=service_id,
                            card_uuid=item.card,
                            outcome=item.outcome,
                            outcome_timestamp=item.timestamp,
                            accepted_suggestions=list(item.accepted_suggestions),
                            override_code=item.override_code,
                            override_display=item.override_display,
                            user_comment=item.comment,
                        )
                    )
                new += 1
            except IntegrityError:
                repeats += 1  # a concurrent copy of the same feedback won the race
    return new, repeats


def feedback_report(database_url: str) -> dict[str, Any]:
    """Per criterion: cards issued, feedback received, accept and override rates, and the override reasons."""
    issued: Counter[str] = Counter()
    criterion_of: dict[str, str] = {}
    payer_of: dict[str, str | None] = {}
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"accepted": 0, "overridden": 0, "reasons": Counter(), "payers": Counter()}
    )
    with session_scope(database_url) as session:
        for uuid, criterion, payer in session.execute(
            select(CardIssued.uuid, CardIssued.criterion_id, CardIssued.payer_id)
        ):
            crit = criterion or "unknown"
            issued[crit] += 1
            criterion_of[uuid] = crit
            payer_of[uuid] = payer
        for card, outcome, code, display in session.execute(
            select(CdsFeedback.card_uuid, CdsFeedback.outcome, CdsFeedback.override_code, CdsFeedback.override_display)
        ):
            crit = criterion_of.get(card, "unknown")
            entry = stats[crit]
            entry[outcome] += 1
            if payer_of.get(card):
                entry["payers"][payer_of[card]] += 1
            if outcome == "overridden":
                entry["reasons"][display or code or "(no reason given)"] += 1
    rows = []
    for crit in sorted(set(issued) | set(stats)):
        entry = stats[crit] if crit in stats else {"accepted": 0, "overridden": 0, "reasons": Counter()}
        answered = entry["accepted"] + entry["overridden"]
        rows.append(
            {
                "criterion": crit,
                "cards_issued": issued.get(crit, 0),
                "feedback": answered,
                "accepted": entry["accepted"],
                "overridden": entry["overridden"],
                "accept_rate": round(entry["accepted"] / answered, 4) if answered else None,
                "override_rate": round(entry["overridden"] / answered, 4) if answered else None,
                "override_reasons": [
                    {"reason": r, "count": n}
                    for r, n in sorted(entry["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
                ],
            }
        )
    total = sum(r["feedback"] for r in rows)
    return {
        "criteria": rows,
        "totals": {
            "cards_issued": sum(issued.values()),
            "feedback": total,
            "accepted": sum(r["accepted"] for r in rows),
            "overridden": sum(r["overridden"] for r in rows),
        },
    }


def _pct(value: float | None) -> str:
    return "   —" if value is None else f"{value * 100:3.0f}%"


def _print_report(report: dict[str, Any], out: TextIO) -> None:
    rows = report["criteria"]
    if not rows:
        out.write("No CDS cards or feedback recorded yet.\n")
        return
    out.write(f"{'criterion':<34} {'cards':>6} {'answered':>8} {'accept':>6} {'override':>8}\n")
    for r in rows:
        out.write(
            f"{r['criterion']:<34} {r['cards_issued']:>6} {r['feedback']:>8} "
            f"{_pct(r['accept_rate']):>6} {_pct(r['override_rate']):>8}\n"
        )
        for reason in r["override_reasons"]:
            out.write(f"    overridden: {reason['reason']} ×{reason['count']}\n")
    t = report["totals"]
    out.write(
        f"\n{t['cards_issued']} card(s) issued, {t['feedback']} answered: "
        f"{t['accepted']} accepted, {t['overridden']} overridden\n"
    )


def cmd_feedback_report(args: argparse.Namespace, out: TextIO) -> int:
    url = args.database or os.environ.get("DATABASE_URL") or load_settings().database_url
    report = feedback_report(url)
    if args.format == "json":
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(report, out)
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `feedback-report [--format text|json] [--database URL]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "feedback-report", help="accept/override rates and override reasons of CDS cards, per criterion"
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument(
        "--database-url", "--database", dest="database", default=None,
        help="database URL (default: DATABASE_URL or the settings)",
    )
    parser.set_defaults(func=cmd_feedback_report)
    return parser
