"""Integration tests: they start real servers (the sandbox FHIR server, …) on loopback ports."""
