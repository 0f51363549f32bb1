"""Sandbox SMART authorization server (authlib + joserfc) with a scope-enforcing FHIR proxy; dev and demo only."""

from sandbox.smart_auth.app import create_app
from sandbox.smart_auth.runner import SmartAuthServer, ptguard_app_client

__all__ = ["SmartAuthServer", "create_app", "ptguard_app_client"]
