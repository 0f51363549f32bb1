"""CDS Hooks 2.0 service (Flask blueprint): discovery, service calls, feedback, caller verification, CORS."""

from __future__ import annotations

from typing import Any


def init_app(app: Any) -> None:
    """Read the CDS settings into app.config and mount the blueprint (Flask is imported only here)."""
    from cds_hooks.routes import configure

    configure(app)
