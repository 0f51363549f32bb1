"""Render the appeal packet: one PDF (weasyprint) with the letter first and a bookmark per exhibit (pypdf)."""

from __future__ import annotations

import base64
import io
import logging
import re
import time
import warnings
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from ptguard.appeals.assemble import TEMPLATES
from ptguard.appeals.facts import long_date
from ptguard.appeals.model import AppealLetter

_GAP = re.compile(r"\[GAP: ([^\]]*)\]")


@dataclass
class Packet:
    """The rendered PDF and how long each step took."""

    pdf: bytes
    pages: int
    outline: list[str]
    html_ms: float
    pdf_ms: float


def _gapmark(text: str) -> Markup:
    escaped = str(escape(text))
    return Markup(_GAP.sub(lambda m: f'<span class="gap">[GAP: {m.group(1)}]</span>', escaped))  # noqa: S704 - escaped above


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]))
    env.filters["gapmark"] = _gapmark
    return env


def packet_html(letter: AppealLetter, *, today: date | None = None) -> str:
    """The packet as one HTML document (letter, then one section per exhibit)."""
    day = today or datetime.now().astimezone().date()
    return _env().get_template("pdf/packet.html.j2").render(letter=letter, today=long_date(day))


def render_packet(letter: AppealLetter, *, today: date | None = None) -> Packet:
    """The PDF packet; attached PDF documents (DocumentReference attachments) are appended with their own bookmark."""
    with warnings.catch_warnings():
        # Without libharfbuzz-subset, WeasyPrint warns at import that a future version will need it; fonts still embed.
        warnings.filterwarnings("ignore", message="HarfBuzz-Subset", category=DeprecationWarning)
        import weasyprint  # type: ignore[import-untyped]
    from pypdf import PdfReader, PdfWriter

    for name in ("weasyprint", "fontTools", "fontTools.subset", "fontTools.ttLib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    t0 = time.perf_counter()
    html = packet_html(letter, today=today)
    t1 = time.perf_counter()
    raw = weasyprint.HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
    assert raw is not None
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(raw)))
    for exhibit in letter.exhibits:
        if exhibit.pdf_base64:
            attached = PdfReader(io.BytesIO(base64.b64decode(exhibit.pdf_base64)))
            writer.append(attached, outline_item=f"Exhibit {exhibit.label}: original document")
    writer.add_metadata({"/Title": letter.subject, "/Creator": "ptguard", "/Subject": letter.claim_response})
    out = io.BytesIO()
    writer.write(out)
    pdf = out.getvalue()
    reader = PdfReader(io.BytesIO(pdf))
    outline = [str(item.title) for item in reader.outline if not isinstance(item, list)]
    t2 = time.perf_counter()
    return Packet(pdf, len(reader.pages), outline, (t1 - t0) * 1000, (t2 - t1) * 1000)
