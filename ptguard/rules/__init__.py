"""The 97530 rules engine: payer criteria as data, unit arithmetic, NCCI, Medicare rules, note text."""
