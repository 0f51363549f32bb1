"""The SMART on FHIR app (Flask blueprint): launch, the denial worklist, denied-claim and check views, appeals."""

from __future__ import annotations

from typing import Any


def init_app(app: Any) -> None:
    """Mount the SMART app at /app."""
    import logging

    from smart_app.views import bp, init_state

    # urllib3 logs request lines with their query strings (patient ids, launch tokens) at DEBUG: keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    app.config.setdefault("PTGUARD_SMART_ISSUERS", None)
    app.config.setdefault("SMART_REDIRECT_URI", None)
    init_state(app)
    app.register_blueprint(bp)
