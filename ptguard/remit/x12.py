"""A tolerant X12 835 reader: normaliser, delimiter detection, segment reader and 835 loop parser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from ptguard.errors import InputError
from ptguard.remit.model import (
    GROUP_CODES,
    Adjustment,
    ClaimPayment,
    Party,
    ProcedureCode,
    ProviderAdjustment,
    Remittance,
    ServiceLine,
)

_TAG = re.compile(r"^[A-Z][A-Z0-9]{1,2}$")
_X12_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1)  # ISA01..ISA15; ISA16 is one character
_COMPONENT_FALLBACKS = ">:|^!\\"
_MAX_SHOWN = 24
# X12 amounts and quantities (data type R) have at most 18 digits; anything from 10^15 on (a quadrillion dollars or
# units, or an exponent such as 1E400, which would become an infinite FHIR value) is a corrupt element.
_MAX_MAGNITUDE = 15


class X12Error(InputError):
    """An X12 file or one of its segments cannot be read; the message names segment, element and expectation."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        segment: int | None = None,
        tag: str | None = None,
        element: str | None = None,
    ) -> None:
        self.source = source
        self.segment = segment
        self.tag = tag
        self.element = element
        parts: list[str] = []
        if segment is not None:
            parts.append(f"segment {segment}" + (f" ({tag})" if tag else ""))
        if element:
            parts.append(element)
        where = ", ".join(parts) or None
        if source:
            where = f"{source}: {where}" if where else source
        super().__init__(_one_line(message), where=where)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shown(value: str) -> str:
    """A short, printable rendering of a value for an error message."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in value)
    return repr(clean if len(clean) <= _MAX_SHOWN else clean[:_MAX_SHOWN] + "…")


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators an interchange declares in its ISA (element = ISA char 4, ISA11, ISA16, terminator)."""

    element: str
    component: str
    repetition: str | None
    segment: str  # "\n" when segments are framed by line breaks

    @property
    def newline_framed(self) -> bool:
        """True when line breaks, not a printable character, end segments."""
        return self.segment == "\n"


@dataclass(slots=True)
class Segment:
    """One segment: its 1-based position in the file, its identifier and its elements (elements[0] is ISA01…)."""

    number: int
    tag: str
    elements: list[str]

    def el(self, position: int) -> str:
        """Element at its X12 position (1-based), stripped; '' when absent."""
        if 1 <= position <= len(self.elements):
            return self.elements[position - 1].strip()
        return ""

    def text(self, delimiters: Delimiters) -> str:
        """The segment re-serialised with its file's element separator (no terminator)."""
        return delimiters.element.join([self.tag, *self.elements])


@dataclass(slots=True)
class ReadResult:
    """What `read_835` got out of one file: remittances, errors (quarantine if any), raw CLP count."""

    source: str
    remittances: list[Remittance] = field(default_factory=list)
    errors: list[X12Error] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw_clp_count: int = 0
    rejected_claims: int = 0
    delimiters: Delimiters | None = None

    @property
    def claims(self) -> list[ClaimPayment]:
        """Every claim read, across transactions, in file order."""
        return [c for r in self.remittances for c in r.claims]

    @property
    def claim_count(self) -> int:
        """Number of claims read (rejected claims excluded)."""
        return sum(len(r.claims) for r in self.remittances)

    @property
    def ok(self) -> bool:
        """True when nothing went wrong and every raw CLP segment became a claim."""
        return not self.errors and self.claim_count == self.raw_clp_count

    def raise_if_quarantined(self) -> None:
        """Raise the first error when the file must be quarantined (any error, or a claim count mismatch)."""
        if self.errors:
            raise self.errors[0]
        if self.claim_count != self.raw_clp_count:
            raise X12Error(
                f"read {self.claim_count} claims but the file has {self.raw_clp_count} CLP segments",
                source=self.source,
            )


# --------------------------------------------------------------------------------------------- normaliser


def decode(data: bytes, source: str = "") -> str:
    """Bytes → text: UTF-16 when marked or NUL-interleaved, else UTF-8 (BOM stripped) with a latin-1 fallback."""
    if not data or not data.strip():
        raise X12Error("the file is empty; expected an X12 interchange starting with 'ISA'", source=source)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", errors="replace")
    elif len(data) >= 4 and data[1:4:2] == b"\x00\x00" and data[0] != 0:
        text = data.decode("utf-16-le", errors="replace")
    elif len(data) >= 4 and data[0:3:2] == b"\x00\x00" and data[1] != 0:
        text = data.decode("utf-16-be", errors="replace")
    else:
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text.lstrip("\ufeff \t\r\n")


def _looks_binary(text: str) -> bool:
    sample = text[:512]
    bad = sum(1 for ch in sample if not ch.isprintable() and ch not in "\r\n\t")
    return bad > max(2, len(sample) // 20)


def detect_delimiters(text: str, source: str = "") -> tuple[Delimiters, int]:
    """Delimiters from the ISA, and the index where the first segment after the ISA begins."""
    if _looks_binary(text):
        raise X12Error("the file is binary, not X12 text; expected an interchange starting with 'ISA'", source=source)
    if not text.startswith("ISA"):
        raise X12Error(
            f"no ISA interchange header: the file starts with {_shown(text[:12])}; expected 'ISA'",
            source=source,
            segment=1,
        )
    if len(text) < 4:
        raise X12Error("the ISA segment is cut off after 'ISA'", source=source, segment=1, tag="ISA")
    element = text[3]
    if element.isalnum() or element.isspace():
        raise X12Error(
            f"element separator {_shown(element)} (ISA character 4) is a letter, digit or space; "
            "expected a punctuation character such as '*'",
            source=source,
            segment=1,
            tag="ISA",
        )
    # Walk the ISA by its element separators: tolerant of a non-fixed-width ISA.
    pos = 3
    for n in range(16):
        nxt = text.find(element, pos + 1)
        if nxt < 0 or (nxt - pos > 40):
            raise X12Error(
                f"the ISA has {n + 1} elements; expected 16 (ISA16 component separator, then the terminator)",
                source=source,
                segment=1,
                tag="ISA",
                element=f"ISA{n + 2:02d}",
            )
        pos = nxt
        if n == 14:
            break
    # `pos` is now the separator before ISA16.
    if pos + 2 > len(text):
        raise X12Error(
            "the ISA ends before ISA16 and the segment terminator", source=source, segment=1, tag="ISA",
            element="ISA16",
        )
    component = text[pos + 1]
    terminator = text[pos + 2] if pos + 2 < len(text) else ""
    if not terminator:
        raise X12Error("the file ends right after ISA16; expected a segment terminator", source=source,
                       segment=1, tag="ISA", element="ISA16")
    if terminator in "\r\n":
        terminator = "\n"
    elif terminator.isalnum() or terminator == element:
        raise X12Error(
            f"segment terminator {_shown(terminator)} after ISA16 is not a delimiter; "
            "expected a character such as '~' (is the ISA cut short?)",
            source=source,
            segment=1,
            tag="ISA",
            element="ISA16",
        )
    if component.isalnum() or component == element or component.isspace():
        raise X12Error(
            f"component separator {_shown(component)} (ISA16) is not usable; expected a character such as ':'",
            source=source,
            segment=1,
            tag="ISA",
            element="ISA16",
        )
    isa_elements = text[4 : pos + 2].split(element)
    repetition: str | None = None
    if len(isa_elements) >= 12:
        rep = isa_elements[10]
        version = isa_elements[11].strip()
        if len(rep) == 1 and not rep.isalnum() and rep not in (element, component, terminator) and version >= "00501":
            repetition = rep
    return Delimiters(element, component, repetition, terminator), pos + 3


def _raw_segments(text: str, delims: Delimiters, start: int) -> Iterator[str]:
    """Segment strings after the ISA: terminator or line-break framed, indentation stripped."""
    body = text[start:]
    if delims.newline_framed:
        for line in re.split(r"\r\n|\r|\n", body):
            seg = line.strip()
            # Newline-framed files in the wild put the old '~' terminator at the start of the next line.
            if seg.startswith("~") and "~" not in (delims.element, delims.component):
                seg = seg.lstrip("~").strip()
            if seg:
                yield seg
    else:
        for piece in body.split(delims.segment):
            seg = piece.strip(" \t\r\n\x00")
            if seg:
                yield seg


def segments(text: str, delims: Delimiters, start: int) -> Iterator[Segment]:
    """Every segment of the file (the ISA first), numbered from 1."""
    isa = text[4 : start - 1] if start else ""
    yield Segment(1, "ISA", isa.split(delims.element))
    for n, raw in enumerate(_raw_segments(text, delims, start), start=2):
        parts = raw.split(delims.element)
        yield Segment(n, parts[0].strip(), parts[1:])


def raw_clp_count(text: str, delims: Delimiters) -> int:
    """CLP segments counted straight from the text, independently of the loop parser."""
    term = r"(?:\r\n|\r|\n)" if delims.newline_framed else re.escape(delims.segment)
    pattern = rf"(?:^|{term})[\s~]*CLP{re.escape(delims.element)}"
    return len(re.findall(pattern, text))


def normalise(data: bytes, source: str = "") -> str:
    """A canonical copy for strict parsers: BOM/indentation gone, fixed-width ISA, '~' + LF terminators."""
    text = decode(data, source)
    delims, start = detect_delimiters(text, source)
    segs = list(segments(text, delims, start))
    isa = segs[0].elements
    fixed = [isa[i].strip().ljust(w)[:w] if i not in (1, 3) else isa[i].ljust(w)[:w] for i, w in
             enumerate(_ISA_WIDTHS)]
    term = "~" if "~" not in (delims.element, delims.component, delims.repetition) else delims.segment
    if term == "\n":
        term = "\x1c"
    lines = [delims.element.join(["ISA", *fixed, delims.component])]
    lines += [s.text(delims) for s in segs[1:]]
    return "".join(f"{line}{term}\n" for line in lines)


# --------------------------------------------------------------------------------------------- values


class _ElementError(Exception):
    """Internal: one element is wrong; turned into an X12Error with the segment number."""

    def __init__(self, element: str, message: str) -> None:
        super().__init__(message)
        self.element = element
        self.message = message


def _name(seg: Segment, position: int) -> str:
    return f"{seg.tag}{position:02d}"


def _amount(seg: Segment, position: int, what: str, *, required: bool = True) -> Decimal | None:
    raw = seg.el(position)
    if not raw:
        if required:
            raise _ElementError(_name(seg, position), f"{what} is missing; expected a decimal amount")
        return None
    try:
        # X12's R type: ASCII digits, an optional minus and decimal point; no exponent, no "_" or other digits.
        value = Decimal(raw) if _X12_DECIMAL.fullmatch(raw) else Decimal("NaN")
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise _ElementError(_name(seg, position), f"{what} {_shown(raw)} is not a decimal amount")
    if value and value.adjusted() >= _MAX_MAGNITUDE:
        raise _ElementError(_name(seg, position), f"{what} {_shown(raw)} is out of range; "
                                                  "expected at most 15 digits before the decimal point")
    return value


def _req_amount(seg: Segment, position: int, what: str) -> Decimal:
    value = _amount(seg, position, what)
    assert value is not None
    return value


def _date(seg: Segment, position: int, what: str) -> date | None:
    raw = seg.el(position)
    if not raw:
        return None
    if not re.fullmatch(r"\d{8}", raw, re.ASCII):
        raise _ElementError(_name(seg, position), f"{what} {_shown(raw)} is not a date; expected CCYYMMDD")
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError as exc:
        raise _ElementError(_name(seg, position), f"{what} {_shown(raw)} is not a calendar date") from exc


EARLIEST_YEAR, LATEST_YEAR = 1990, 2100  # an 835 date outside these years is a typo or a placeholder (99991231)
MAX_DAYS_AHEAD = 366


def implausible(value: date, today: date) -> str | None:
    """Why a remittance date cannot be real (before 1990, after 2100, over a year after `today`), else None."""
    if value.year < EARLIEST_YEAR:
        return f"before {EARLIEST_YEAR}"
    if value.year > LATEST_YEAR:
        return f"after {LATEST_YEAR}"
    if (value - today).days > MAX_DAYS_AHEAD:
        return "more than a year in the future"
    return None


def _split_composite(seg: Segment, position: int, delims: Delimiters, warnings: list[str]) -> list[str]:
    """A composite's components; falls back to another separator when the file uses one ISA16 does not declare."""
    raw = seg.el(position)
    if delims.component in raw:
        return [p.strip() for p in raw.split(delims.component)]
    if len(raw) > 3 and re.fullmatch(r"[A-Z0-9]{2}", raw[:2]) and raw[2] in _COMPONENT_FALLBACKS:
        sep = raw[2]
        if sep not in (delims.element, delims.segment):
            warnings.append(
                f"segment {seg.number} {_name(seg, position)} uses {sep!r} as component separator "
                f"but ISA16 declares {delims.component!r}"
            )
            return [p.strip() for p in raw.split(sep)]
    return [raw]


def _procedure(seg: Segment, position: int, delims: Delimiters, warnings: list[str]) -> ProcedureCode:
    parts = _split_composite(seg, position, delims, warnings)
    qualifier = parts[0]
    code = parts[1] if len(parts) > 1 else ""
    name = f"{_name(seg, position)}"
    if not re.fullmatch(r"[A-Z0-9]{2}", qualifier):
        raise _ElementError(name, f"product/service qualifier {_shown(qualifier)} is not valid; "
                                  "expected a 2-character qualifier such as HC, AD, NU or ZZ")
    if not code:
        raise _ElementError(name, f"composite {_shown(seg.el(position))} has no procedure code; "
                                  f"expected qualifier{delims.component}code")
    modifiers = [m for m in parts[2:6] if m]
    description = parts[6] if len(parts) > 6 and parts[6] else None
    return ProcedureCode(qualifier, code, modifiers, description)


def _adjustments(seg: Segment) -> list[Adjustment]:
    group = seg.el(1)
    if group not in GROUP_CODES:
        raise _ElementError("CAS01", f"group code {_shown(group)} is not a claim adjustment group code; "
                                     "expected CO, PR, OA, PI or CR")
    out: list[Adjustment] = []
    for k in range(6):
        r, a, q = 2 + 3 * k, 3 + 3 * k, 4 + 3 * k
        reason = seg.el(r)
        if not reason and not seg.el(a):
            if k == 0:
                raise _ElementError("CAS02", "the first adjustment reason code is missing; expected a CARC")
            continue
        if not re.fullmatch(r"[A-Z0-9]{1,5}", reason):
            raise _ElementError(_name(seg, r), f"adjustment reason {_shown(reason)} is not a CARC; "
                                               "expected 1–5 letters/digits such as 50 or B7")
        amount = _req_amount(seg, a, "adjustment amount")
        quantity = _amount(seg, q, "adjustment quantity", required=False)
        out.append(Adjustment(group, reason, amount, quantity))
    return out


# --------------------------------------------------------------------------------------------- parser


@dataclass(slots=True)
class _Envelope:
    isa: Segment | None = None
    gs: Segment | None = None
    gs_date: date | None = None
    version: str = ""


class _Reader:
    """The 835 loop state machine over a segment stream."""

    def __init__(self, source: str, delims: Delimiters, result: ReadResult) -> None:
        self.source = source
        self.delims = delims
        self.result = result
        self.env = _Envelope()
        self.rem: Remittance | None = None
        self.st: Segment | None = None
        self.st_count = 0
        self.claim: ClaimPayment | None = None
        self.claim_bad = False
        self.line: ServiceLine | None = None
        self.n1: Party | None = None
        self.other_transactions: list[str] = []
        self.skip_transaction = False
        self.group_open = False
        self.group_transactions = 0
        self.today = datetime.now().astimezone().date()  # once per file: what "a year ahead" is measured from

    def error(self, message: str, seg: Segment | None, element: str | None = None) -> None:
        self.result.errors.append(
            X12Error(message, source=self.source, segment=seg.number if seg else None,
                     tag=seg.tag if seg else None, element=element)
        )

    def warn(self, message: str, seg: Segment) -> None:
        self.result.warnings.append(f"segment {seg.number} {seg.tag}: {message}")

    def _when(self, seg: Segment, position: int, what: str) -> date | None:
        """A DTM/BPR/PLB date; an implausible one (99991231, 19000101) is a warning, and not used."""
        value = _date(seg, position, what)
        return self._plausible(value, seg, position, what)

    def _plausible(self, value: date | None, seg: Segment, position: int, what: str) -> date | None:
        why = implausible(value, self.today) if value is not None else None
        if value is None or why is None:
            return value
        note = f"{what} {seg.el(position)} ({_name(seg, position)}) is implausible ({why}); not used"
        if self.claim is not None:
            note = f"claim {self.claim.patient_control_number}: {note}"
        self.warn(note, seg)
        return None

    def _gs_date(self, gs: Segment) -> date | None:
        """GS04, the group date: unreadable or implausible, it is a warning and not used (the file still reads)."""
        try:
            value = _date(gs, 4, "group date")
        except _ElementError as exc:
            self.warn(f"{exc.message}; not used", gs)
            return None
        return self._plausible(value, gs, 4, "group date")

    # -- envelope -------------------------------------------------------------------------------------
    def feed(self, seg: Segment) -> None:
        if not _TAG.fullmatch(seg.tag):
            self.error(f"segment identifier {_shown(seg.tag)} is not valid; expected 2–3 capital letters or "
                       "digits (wrong delimiters or junk in the file?)", seg)
            if self.claim is not None:
                self.claim_bad = True
            return
        tag = seg.tag
        if tag == "ISA":
            if self.env.isa is not None:
                self.close_transaction(seg, missing="SE")
                self.error(f"ISA {seg.el(13) or '?'} starts before IEA closed the previous interchange", seg)
            self.env = _Envelope(isa=seg)
            return
        if tag == "IEA":
            self.close_transaction(seg, missing="SE")
            if self.group_open:
                self.error("IEA reached but the functional group has no GE", seg)
                self.group_open = False
            if self.env.isa is not None and seg.el(2) != self.env.isa.el(13):
                self.warn(f"IEA02 {_shown(seg.el(2))} does not match ISA13 {_shown(self.env.isa.el(13))}", seg)
            self.env.isa = None
            return
        if tag == "GS":
            self.close_transaction(seg, missing="SE")
            self.env.gs = seg
            self.env.gs_date = self._gs_date(seg)  # read (and warned about) once per group
            self.env.version = seg.el(8)
            self.group_open = True
            self.group_transactions = 0
            return
        if tag == "GE":
            self.close_transaction(seg, missing="SE")
            if self.env.gs is not None and seg.el(2) != self.env.gs.el(6):
                self.warn(f"GE02 {_shown(seg.el(2))} does not match GS06 {_shown(self.env.gs.el(6))}", seg)
            if seg.el(1).isascii() and seg.el(1).isdigit() and int(seg.el(1)) != self.group_transactions:
                self.error(f"GE01 says {seg.el(1)} transaction sets; the group has {self.group_transactions}",
                           seg, "GE01")
            self.group_open = False
            return
        if tag == "ST":
            self.close_transaction(seg, missing="SE")
            self.open_transaction(seg)
            return
        if self.st is None:
            self.error("segment outside an ST/SE transaction set; expected ST before it", seg)
            return
        self.st_count += 1
        if tag == "SE":
            self.finish_transaction(seg)
            return
        if self.skip_transaction:
            return
        try:
            self.body(seg)
        except _ElementError as exc:
            self.error(exc.message, seg, exc.element)
            if self.claim is not None and tag not in ("PLB",):
                self.claim_bad = True

    def open_transaction(self, seg: Segment) -> None:
        self.st = seg
        self.st_count = 1
        self.group_transactions += 1
        kind = seg.el(1)
        if kind != "835":
            self.skip_transaction = True
            self.other_transactions.append(kind or "?")
            self.error(f"transaction set {_shown(kind)} is not an 835 remittance (ST01); ptguard reads 835 only"
                       + (" — this looks like an 837 claim" if kind == "837" else ""), seg, "ST01")
            return
        self.skip_transaction = False
        isa, gs = self.env.isa, self.env.gs
        if isa is None:
            self.error("ST without an enclosing ISA interchange", seg)
        if gs is None:
            self.error("ST without an enclosing GS functional group", seg)
        version = self.env.version or seg.el(3)
        if version and not version.startswith(("005010", "004010")):
            self.result.warnings.append(
                f"segment {seg.number} ST: version {version!r} is not 005010X221A1 or 004010X091A1; "
                "read with the 835 layout common to both"
            )
        self.rem = Remittance(
            source=self.source,
            interchange_control_number=isa.el(13) if isa else "",
            group_control_number=gs.el(6) if gs else "",
            transaction_control_number=seg.el(2),
            version=version,
            interchange_date=self.env.gs_date if gs is not None else None,
            sender_id=isa.el(6) if isa else None,
            receiver_id=isa.el(8) if isa else None,
            segment_number=seg.number,
        )

    def finish_claim(self) -> None:
        if self.claim is None or self.rem is None:
            self.claim = None
            return
        if self.claim_bad:
            self.result.rejected_claims += 1
        else:
            self.rem.claims.append(self.claim)
        self.claim = None
        self.claim_bad = False
        self.line = None

    def finish_transaction(self, se: Segment) -> None:
        self.finish_claim()
        assert self.st is not None
        declared = se.el(1)
        if not (declared.isascii() and declared.isdigit()):
            self.error(f"SE01 {_shown(declared)} is not a segment count", se, "SE01")
        elif int(declared) != self.st_count:
            self.error(f"SE01 says {declared} segments but the transaction has {self.st_count} (ST to SE)",
                       se, "SE01")
        if se.el(2) != self.st.el(2):
            self.warn(f"SE02 {_shown(se.el(2))} does not match ST02 {_shown(self.st.el(2))}", se)
        self.end_transaction()

    def close_transaction(self, seg: Segment, *, missing: str) -> None:
        if self.st is None:
            return
        self.error(f"transaction {_shown(self.st.el(2))} (ST at segment {self.st.number}) has no {missing}; "
                   f"reached {seg.tag} instead (file cut short or segments lost?)", seg)
        self.finish_claim()
        self.end_transaction()

    def end_transaction(self) -> None:
        if self.rem is not None:
            self.result.remittances.append(self.rem)
        self.rem = None
        self.st = None
        self.n1 = None
        self.skip_transaction = False

    def end_of_file(self, last: Segment | None) -> None:
        if self.st is not None:
            self.error(f"the file ends inside transaction {_shown(self.st.el(2))} (ST at segment "
                       f"{self.st.number}); expected SE, GE and IEA", last)
            self.finish_claim()
            self.end_transaction()
            return
        if self.group_open:
            self.error("the file ends without GE closing the functional group", last)
        if self.env.isa is not None:
            self.error("the file ends without IEA closing the interchange", last)

    # -- 835 body ------------------------------------------------------------------------------------
    def body(self, seg: Segment) -> None:
        rem = self.rem
        assert rem is not None
        tag = seg.tag
        if tag == "CLP":
            self.finish_claim()
            self.n1 = None
            self.start_claim(seg)
            return
        if tag == "PLB":
            self.finish_claim()
            self.plb(seg, rem)
            return
        if tag == "LX":
            self.finish_claim()
            return
        if self.claim is not None:
            self.claim.raw_segments.append(seg.text(self.delims))
            self.claim_segment(seg, self.claim)
            return
        self.header(seg, rem)

    def header(self, seg: Segment, rem: Remittance) -> None:
        tag = seg.tag
        if tag == "BPR":
            rem.handling_code = seg.el(1) or None
            rem.payment_amount = _amount(seg, 2, "total payment amount")
            rem.credit_debit = seg.el(3) or None
            rem.payment_method = seg.el(4) or None
            rem.payment_date = self._when(seg, 16, "payment date")
        elif tag == "TRN":
            rem.trace_number = seg.el(2) or None
            rem.trace_originator = seg.el(3) or None
        elif tag == "DTM" and seg.el(1) == "405":
            rem.production_date = self._when(seg, 2, "production date")
        elif tag == "N1":
            party = Party(seg.el(2) or None, seg.el(3) or None, seg.el(4) or None)
            if seg.el(1) == "PR":
                rem.payer = party
                self.n1 = party
            elif seg.el(1) == "PE":
                rem.payee = party
                self.n1 = party
            else:
                self.n1 = None
        elif tag == "REF" and self.n1 is rem.payer and seg.el(1) == "2U" and not rem.payer.identifier:
            rem.payer.id_qualifier, rem.payer.identifier = "2U", seg.el(2) or None

    def start_claim(self, seg: Segment) -> None:
        self.claim_bad = False
        self.line = None
        pcn = seg.el(1)
        self.claim = ClaimPayment(pcn, seg.el(2), Decimal(0), Decimal(0), segment_number=seg.number,
                                  raw_segments=[seg.text(self.delims)])
        claim = self.claim
        if not pcn:
            raise _ElementError("CLP01", "patient control number is missing")
        if not seg.el(2):
            raise _ElementError("CLP02", "claim status code is missing; expected 1, 2, 3, 4, 19–23 or 25")
        claim.charge = _req_amount(seg, 3, "total claim charge")
        claim.paid = _req_amount(seg, 4, "claim payment amount")
        claim.patient_responsibility = _amount(seg, 5, "patient responsibility", required=False)
        claim.filing_indicator = seg.el(6) or None
        claim.payer_claim_control_number = seg.el(7) or None
        facility = _split_composite(seg, 8, self.delims, self.result.warnings)
        claim.facility_code = facility[0] or None
        claim.frequency_code = seg.el(9) or None

    def claim_segment(self, seg: Segment, claim: ClaimPayment) -> None:
        tag = seg.tag
        line = self.line
        if tag == "SVC":
            self.line = self.service(seg)
            claim.service_lines.append(self.line)
        elif tag == "CAS":
            (line.adjustments if line else claim.adjustments).extend(_adjustments(seg))
        elif tag == "NM1" and line is None:
            role = seg.el(1)
            if role == "QC":
                claim.patient_last_name = seg.el(3) or None
                claim.patient_first_name = seg.el(4) or None
                claim.patient_middle_name = seg.el(5) or None
                claim.patient_id_qualifier = seg.el(8) or None
                claim.patient_member_id = seg.el(9) or None
            elif role == "IL":
                claim.subscriber_member_id = seg.el(9) or None
            elif role == "82":
                claim.rendering_provider_name = " ".join(p for p in (seg.el(3), seg.el(4)) if p) or None
                claim.rendering_provider_id = seg.el(9) or None
        elif tag == "MOA" and line is None:
            claim.moa_remark_codes.extend(c for c in (seg.el(i) for i in range(3, 8)) if c)
        elif tag == "MIA" and line is None:
            claim.mia_remark_codes.extend(c for c in (seg.el(i) for i in (5, 20, 21, 22, 23)) if c)
        elif tag == "DTM":
            qual = seg.el(1)
            if line is not None:
                if qual == "472":
                    line.service_date = self._when(seg, 2, "service date")
                elif qual == "150":
                    line.service_period_start = self._when(seg, 2, "service period start")
                elif qual == "151":
                    line.service_period_end = self._when(seg, 2, "service period end")
            elif qual == "232":
                claim.statement_from = self._when(seg, 2, "statement from date")
            elif qual == "233":
                claim.statement_to = self._when(seg, 2, "statement to date")
            elif qual == "050":
                claim.received_date = self._when(seg, 2, "claim received date")
        elif tag == "REF" and line is not None and seg.el(1) == "6R":
            line.line_control_number = seg.el(2) or None
        elif tag == "AMT" and line is not None and seg.el(1) == "B6":
            line.allowed_amount = _amount(seg, 2, "allowed amount")
        elif tag == "LQ" and line is not None and seg.el(1) == "HE" and seg.el(2):
            line.remark_codes.append(seg.el(2))

    def service(self, seg: Segment) -> ServiceLine:
        warnings = self.result.warnings
        line = ServiceLine(
            procedure=_procedure(seg, 1, self.delims, warnings),
            charge=_req_amount(seg, 2, "line item charge"),
            paid=_req_amount(seg, 3, "line item payment"),
            revenue_code=seg.el(4) or None,
            units=_amount(seg, 5, "units of service paid", required=False),
            segment_number=seg.number,
        )
        if seg.el(6):
            line.original_procedure = _procedure(seg, 6, self.delims, warnings)
        line.original_units = _amount(seg, 7, "original units of service", required=False)
        return line

    def plb(self, seg: Segment, rem: Remittance) -> None:
        provider = seg.el(1)
        period = self._when(seg, 2, "fiscal period date")
        for k in range(6):
            c, a = 3 + 2 * k, 4 + 2 * k
            if not seg.el(c) and not seg.el(a):
                continue
            parts = _split_composite(seg, c, self.delims, self.result.warnings)
            reason = parts[0]
            if not re.fullmatch(r"[A-Z0-9]{2}", reason):
                raise _ElementError(_name(seg, c), f"adjustment reason {_shown(reason)} is not a PLB reason code; "
                                                   "expected 2 characters such as WO, L6, CV or FB")
            amount = _req_amount(seg, a, "provider adjustment amount")
            rem.provider_adjustments.append(
                ProviderAdjustment(provider, period, reason, parts[1] if len(parts) > 1 and parts[1] else None,
                                   amount)
            )


def read_835(data: bytes, source: str) -> ReadResult:
    """Read an 835 file: remittances, per-segment errors and the raw CLP count (file-level problems raise)."""
    text = decode(data, source)
    delims, start = detect_delimiters(text, source)
    result = ReadResult(source=source, delimiters=delims)
    result.raw_clp_count = raw_clp_count(text, delims)
    reader = _Reader(source, delims, result)
    last: Segment | None = None
    for seg in segments(text, delims, start):
        reader.feed(seg)
        last = seg
    reader.end_of_file(last)
    if not result.remittances and reader.other_transactions:
        kinds = ", ".join(sorted(set(reader.other_transactions)))
        hint = " (an 837 claim file, not a remittance)" if "837" in kinds else ""
        raise X12Error(f"no 835 transaction in the file: found transaction set {kinds}{hint}; "
                       "ptguard imports 835 remittance advice only", source=source)
    if not result.remittances and not result.errors:
        raise X12Error("the interchange holds no ST/SE transaction set; expected an 835", source=source)
    parsed = result.claim_count + result.rejected_claims
    if parsed != result.raw_clp_count:
        result.errors.append(X12Error(
            f"read {parsed} claims but the file has {result.raw_clp_count} CLP segments; quarantined",
            source=source))
    return result
