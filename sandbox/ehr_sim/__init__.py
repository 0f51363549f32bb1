"""EHR simulator for the sandbox and demo: signs notes through CDS Hooks, shows cards, launches the SMART app."""

from __future__ import annotations

from typing import Any

from sandbox.ehr_sim.app import SimulatorSettings, create_app
from sandbox.ehr_sim.cds_client import CdsClient, SigningKey
from sandbox.ehr_sim.server import ThreadedServer

__all__ = ["CdsClient", "EhrSimulator", "SigningKey", "SimulatorSettings", "ThreadedServer", "create_app"]


class EhrSimulator(ThreadedServer):
    """The simulator on a loopback port in a background thread; `settings.public_url` is its own URL (JWT iss)."""

    def __init__(self, settings: SimulatorSettings, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__("ehr-sim", host=host, port=port)
        settings.public_url = settings.public_url or self.url
        self.settings = settings
        self.app = create_app(settings)
        self.set_app(self.app)

    @property
    def jwks_url(self) -> str:
        """Where the simulator publishes its public key."""
        return self.url + "/.well-known/jwks.json"

    def issuer_entry(self) -> dict[str, Any]:
        """The ptguard CDS issuers-file entry that trusts this simulator (key by URL, ES384)."""
        return {self.settings.public_url or self.url: {"jwks_url": self.jwks_url, "algorithms": ["ES384"]}}

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the simulator's HTTP sessions."""
        super().stop(timeout)
        sim = self.app.extensions.get("ehr_sim")
        if sim is not None:
            sim.close()
