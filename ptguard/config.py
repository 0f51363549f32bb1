"""Settings: built-in defaults, then PTGUARD_* environment variables, then explicit overrides."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ptguard.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
RULES_DIR = PACKAGE_DIR / "rules"


def default_database_url() -> str:
    """SQLite in the user's data folder ($XDG_DATA_HOME/ptguard, else ~/.local/share/ptguard): one place, whatever the cwd."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ptguard"
    return f"sqlite:///{base / 'ptguard.sqlite3'}"


@dataclass(frozen=True)
class Settings:
    """Every knob ptguard reads; one instance is passed down instead of reading the environment ad hoc."""

    criteria_dir: Path = RULES_DIR / "criteria"
    payer_map: Path | None = None
    database_url: str = field(default_factory=default_database_url)
    fhir_timeout_seconds: float = 10.0
    cds_time_budget_ms: int = 400
    extra: Mapping[str, str] = field(default_factory=dict)


_ENV_NAMES = {
    "criteria_dir": "PTGUARD_CRITERIA_DIR",
    "payer_map": "PTGUARD_PAYER_MAP",
    "database_url": "DATABASE_URL",
    "fhir_timeout_seconds": "PTGUARD_FHIR_TIMEOUT",
    "cds_time_budget_ms": "PTGUARD_CDS_TIME_BUDGET_MS",
}


def env_int(
    name: str, default: int, *, low: int, high: int, what: str, environ: Mapping[str, str] | None = None
) -> int:
    """An integer setting from the environment: `default` when unset or blank, ConfigError (exit 5) naming the
    variable when it is not a whole number in [low, high]."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return default
    digits = raw.strip()
    # ASCII digits only: int() would also take "1_000" or other scripts' digits, which no one means in a setting
    value = int(digits) if re.fullmatch(r"-?[0-9]{1,18}", digits) else low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw[:20]!r} is not {what}")
    return value


def _convert(name: str, raw: str) -> object:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = str(kinds[name])
    try:
        if "Path" in kind:
            return Path(raw).expanduser()
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{_ENV_NAMES[name]}={raw!r} is not a valid {kind}") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None) -> Settings:
    """Defaults, then environment, then overrides (tests)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, var in _ENV_NAMES.items():
        raw = env.get(var)
        if raw:
            values[name] = _convert(name, raw)
    extra = {k: v for k, v in env.items() if k.startswith("PTGUARD_") and k not in _ENV_NAMES.values()}
    settings = replace(Settings(), extra=extra, **values)  # type: ignore[arg-type]
    if overrides:
        settings = replace(settings, **overrides)  # type: ignore[arg-type]
    return settings
