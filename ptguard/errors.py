"""One exception family for the core, each with the CLI exit code it maps to."""

from __future__ import annotations

import os

# What a reader of untrusted JSON raises when an element has a type or shape no check foresaw; the safety nets
# around one encounter / one adjudication catch these so the others of a batch still go on.
MALFORMED_DATA: tuple[type[Exception], ...] = (TypeError, AttributeError, KeyError, ValueError, IndexError)


def debugging() -> bool:
    """True when PTGUARD_DEBUG is set: safety nets re-raise and errors keep their traceback."""
    return bool(os.environ.get("PTGUARD_DEBUG"))


class PtguardError(Exception):
    """Base of every error the core raises on purpose; its message is safe to show a user."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def one_line(self) -> str:
        """The error as one line of text, without PHI or tokens."""
        return str(self).replace("\n", " ")


class InputError(PtguardError):
    """The input file or data cannot be used (malformed JSON, wrong resource type, unknown format)."""

    exit_code = 2


class UnsupportedVersionError(InputError):
    """The data is FHIR but not R4 (e.g. R5), which ptguard does not read."""


class NotFoundError(PtguardError):
    """A resource, encounter or payer asked for is not there."""

    exit_code = 3


class RuleFileError(PtguardError):
    """A payer criteria or data table file is invalid (file, JSON path and reason in the message)."""

    exit_code = 4


class ConfigError(PtguardError):
    """A setting is missing or invalid."""

    exit_code = 5


class FhirServerError(PtguardError):
    """A FHIR server answered with an error, too slowly, or not at all."""

    exit_code = 6

    def __init__(self, message: str, *, where: str | None = None, status: int | None = None) -> None:
        super().__init__(message, where=where)
        self.status = status
