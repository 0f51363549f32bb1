"""Persistence: appeal cases with their audit trail, CDS feedback, the denial worklist, remittance files, SMART state."""
