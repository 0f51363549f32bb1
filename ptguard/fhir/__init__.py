"""FHIR R4 reading: loading files, resolving references, code systems, selective validation."""
