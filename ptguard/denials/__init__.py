"""Denials: decode a ClaimResponse or ExplanationOfBenefit, choose the path, compute the appeal deadline."""
