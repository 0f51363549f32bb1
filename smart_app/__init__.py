"""The SMART on FHIR app (Flask blueprint): launch, the denial worklist, denied-claim and check views, appeals."""

from __future__ import annotations

import os
from typing import Any


def init_app(app: Any) -> None:
    """Mount the SMART app at /app."""
    import logging

    from smart_app.views import bp, init_state

    # urllib3 logs request lines with their query strings (patient ids, launch tokens) at DEBUG: keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    app.config.setdefault("PTGUARD_SMART_ISSUERS", None)
    app.config.setdefault("SMART_REDIRECT_URI", None)
    app.config.setdefault("PTGUARD_CONTRACT_DEADLINES", os.environ.get("PTGUARD_CONTRACT_DEADLINES") or None)
    init_state(app)
    app.register_blueprint(bp)
