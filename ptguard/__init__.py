"""ptguard: CPT 97530 documentation checks and denial appeals for outpatient therapy."""

__version__ = "0.1.0"
