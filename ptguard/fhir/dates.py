"""FHIR date and dateTime parsing that keeps the timezone and never guesses one silently."""

from __future__ import annotations

import re
from datetime import date, datetime

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$", re.ASCII)


def parse_date(value: object) -> date | None:
    """The calendar date of a FHIR date or dateTime, in the offset it was written in."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    m = _DATE.match(value[:10])
    if not m:
        return None
    year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_datetime(value: object) -> datetime | None:
    """A timezone-aware datetime, or None when the value is not a dateTime with a zone."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def has_zone(value: object) -> bool:
    """True for a date (no time, no zone needed) or a dateTime carrying an offset."""
    if not isinstance(value, str):
        return False
    return "T" not in value or parse_datetime(value) is not None


def minutes_between(start: object, end: object) -> int | None:
    """Whole minutes from start to end, or None when either is missing, zoneless, or reversed."""
    s, e = parse_datetime(start), parse_datetime(end)
    try:
        if s is None or e is None or e < s:
            return None
        return int((e - s).total_seconds() // 60)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range when compared in UTC
        return None


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def date_option(raw: str, option: str) -> date:
    """A command-line date: YYYY-MM-DD, or the calendar date of an ISO dateTime with an offset, in that offset."""
    from ptguard.errors import InputError

    found: date | None = None
    if _ISO_DATE.fullmatch(raw):
        found = parse_date(raw)
    elif _ISO_DATE.fullmatch(raw[:10]) and raw[10:11] == "T" and raw.isascii():
        stamp = parse_datetime(raw)
        found = stamp.date() if stamp is not None else None
    if found is None:
        raise InputError(
            f"{option} {raw[:40]!r} is not a date: give YYYY-MM-DD, or an ISO dateTime with its offset "
            "(2026-11-20T22:30:00-08:00)"
        )
    return found
