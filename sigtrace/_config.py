"""Options of ``sigtrace.install()`` and their ``SIGTRACE_*`` environment mirrors, validated once.

A keyword argument wins over its environment variable; the environment wins over the default.
Nothing read from the environment is evaluated: values are parsed as booleans, numbers or
comma-separated lists, and a bad value is a ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["ConfigError", "Exclusions", "Options", "parse_bool", "resolve_options", "warn_unknown_variables"]

logger = logging.getLogger("sigtrace")

ENV_PREFIX = "SIGTRACE_"
EXCLUDE_KINDS = ("source", "model", "operation", "signal")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
BOOL_SPELLINGS = "true/false/1/0/yes/no/on/off"


class ConfigError(ValueError):
    """A sigtrace option (keyword or ``SIGTRACE_*`` variable) has a value sigtrace cannot use."""


def parse_bool(value: object, name: str) -> bool:
    """The one reading of a boolean setting or variable: ``True``/``False``, ``0``/``1``, or one of
    true/false/1/0/yes/no/on/off in any case; anything else is a ``ConfigError`` naming ``name``
    (``SIGTRACE_STRICT``, ``settings.SIGTRACE["enabled"]``, ``metrics``...)."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigError(f"{name}={value!r}: expected one of {BOOL_SPELLINGS}")


@dataclass(frozen=True, slots=True)
class Exclusions:
    """What to leave untraced, by kind; matched by exact name."""

    sources: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    signals: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.sources or self.models or self.operations or self.signals)

    def matches(self, source: str, model: str | None, operation: str, signal: str | None) -> bool:
        return (
            source in self.sources
            or operation in self.operations
            or (model is not None and model in self.models)
            or (signal is not None and signal in self.signals)
        )


@dataclass(frozen=True, slots=True)
class Options:
    """Validated options of one installation. See docs/configuration.md for each one."""

    service_name: str | None = None
    sources: tuple[str, ...] | None = None
    tracer_provider: Any = None
    meter_provider: Any = None
    logger_provider: Any = None
    audit: bool | Callable[..., Any] | Any = True
    audit_file: str | None = None
    audit_reads: bool = False
    audit_key: bytes | None = field(default=None, repr=False)
    audit_checkpoint_lines: int = 1000
    audit_checkpoint_seconds: float = 60.0
    audit_durability: str = "write"
    metrics: bool = True
    capture_values: bool = False
    redact: tuple[str, ...] = ()
    actor: Callable[[], str | None] | None = None
    exclude: Exclusions = field(default_factory=Exclusions)
    orphan_timeout: float = 300.0
    max_in_flight: int = 10_000
    max_value_length: int = 1024
    shutdown_timeout: float = 5.0


#: Options that can be set from the environment, and how each is parsed.
_ENV_PARSERS: dict[str, str] = {
    "service_name": "str",
    "sources": "list",
    "audit": "bool",
    "audit_file": "str",
    "audit_reads": "bool",
    "audit_key": "str",
    "audit_checkpoint_lines": "int",
    "audit_checkpoint_seconds": "float",
    "audit_durability": "str",
    "metrics": "bool",
    "capture_values": "bool",
    "redact": "list",
    "exclude": "list",
    "orphan_timeout": "float",
    "max_in_flight": "int",
    "max_value_length": "int",
    "shutdown_timeout": "float",
}
ENV_VARIABLES: Mapping[str, str] = {name: ENV_PREFIX + name.upper() for name in _ENV_PARSERS}
#: Variables that are no option of ``install()``: strict mode (sigtrace.core.safety).
OTHER_VARIABLES = frozenset({"SIGTRACE_STRICT"})
#: Prefixes of variables a source reads and checks itself (sigtrace.sources.django.source.django_options).
SOURCE_PREFIXES = ("SIGTRACE_DJANGO_",)
_warned_variables: set[str] = set()


def warn_unknown_variables(
    environ: Mapping[str, str] | None = None, known: Iterable[str] = (), prefix: str = ENV_PREFIX
) -> list[str]:
    """Log once per variable a ``SIGTRACE_*`` variable sigtrace does not know, naming the closest known one.

    A misspelled variable (``SIGTRACE_ORPHAN_TIMOUT``) is otherwise silently ignored. Returns the
    variables warned about now. ``known`` and ``prefix`` serve a source checking its own variables.
    """
    env = os.environ if environ is None else environ
    if prefix == ENV_PREFIX:
        candidates = {*ENV_VARIABLES.values(), *OTHER_VARIABLES, *known}
        skip: tuple[str, ...] = SOURCE_PREFIXES
    else:
        candidates, skip = set(known), ()
    warned = []
    for variable in sorted(env):
        if not variable.startswith(prefix) or variable in candidates or variable.startswith(skip):
            continue
        if variable in _warned_variables:
            continue
        _warned_variables.add(variable)
        close = difflib.get_close_matches(variable, sorted(candidates), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(candidates))}"
        logger.warning("sigtrace: unknown environment variable %s is ignored; %s", variable, hint)
        warned.append(variable)
    return warned


def _parse_env(name: str, raw: str) -> object:
    variable = ENV_VARIABLES[name]
    kind = _ENV_PARSERS[name]
    text = raw.strip()
    if kind == "bool":
        return parse_bool(raw, variable)
    if kind == "list":
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        if not items:
            raise ConfigError(f"{variable}={raw!r}: names nothing; expected comma-separated names (or unset it)")
        return items
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r}: expected an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r}: expected a number of seconds") from None
    return text


def _parse_exclude(value: object) -> Exclusions:
    if isinstance(value, Exclusions):
        return value
    if value is None:
        return Exclusions()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        items: list[str] = []
        for kind, names in value.items():
            kind_name = str(kind).rstrip("s")
            for item in [names] if isinstance(names, str) else names:
                items.append(f"{kind_name}:{item}")
        value = items
    if not isinstance(value, Iterable):
        raise ConfigError(f"exclude={value!r}: expected a list of 'kind:name' strings")
    buckets: dict[str, set[str]] = {kind: set() for kind in EXCLUDE_KINDS}
    for item in value:
        kind, sep, name = str(item).partition(":")
        if not sep or kind not in buckets or not name:
            raise ConfigError(
                f"exclude entry {item!r}: expected 'kind:name' with kind one of {', '.join(EXCLUDE_KINDS)}"
                " (e.g. 'model:AuditLog', 'operation:delete')"
            )
        buckets[kind].add(name)
    return Exclusions(
        sources=frozenset(buckets["source"]),
        models=frozenset(buckets["model"]),
        operations=frozenset(buckets["operation"]),
        signals=frozenset(buckets["signal"]),
    )


#: The provider options and the method each kind of provider has.
_PROVIDER_METHODS = {"tracer_provider": "get_tracer", "meter_provider": "get_meter", "logger_provider": "get_logger"}


def resolve_options(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Options:
    """Merge keyword options over ``SIGTRACE_*`` variables and validate every value."""
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
    merged: dict[str, Any] = {}
    #: Where a value came from the environment: its variable and the text as given, for error messages.
    from_env: dict[str, str] = {}
    for name in _ENV_PARSERS:
        raw = env.get(ENV_VARIABLES[name])
        if raw is not None and raw.strip() != "":
            merged[name] = _parse_env(name, raw)
            from_env[name] = f"{ENV_VARIABLES[name]}={raw!r}"
    merged.update({k: v for k, v in kwargs.items()})
    for name in kwargs:
        from_env.pop(name, None)

    def given(name: str) -> str:
        """How the user wrote the value: ``SIGTRACE_ORPHAN_TIMEOUT='-3'`` or ``orphan_timeout=-3``."""
        return from_env.get(name) or f"{name}={merged[name]!r}"

    if "SIGTRACE_STRICT" in env and env["SIGTRACE_STRICT"].strip():
        parse_bool(env["SIGTRACE_STRICT"], "SIGTRACE_STRICT")  # read when an error happens: checked now

    if "sources" in merged and merged["sources"] is not None:
        sources = merged["sources"]
        if isinstance(sources, str):
            sources = [sources]
        merged["sources"] = tuple(str(s).strip().lower() for s in sources)
    if "redact" in merged:
        patterns = merged["redact"]
        if isinstance(patterns, str):
            patterns = [patterns]
        checked = []
        for pattern in patterns or ():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ConfigError(f"redact pattern {pattern!r} is not a valid regular expression: {exc}") from None
            checked.append(str(pattern))
        merged["redact"] = tuple(checked)
    if "exclude" in merged:
        merged["exclude"] = _parse_exclude(merged["exclude"])
    for name in ("audit_reads", "metrics", "capture_values"):
        if name in merged:
            merged[name] = parse_bool(merged[name], given(name))
    if isinstance(merged.get("audit"), str | int):
        merged["audit"] = parse_bool(merged["audit"], given("audit"))
    audit = merged.get("audit", True)
    # A structlog logger as _runtime uses it: ``info`` and ``bind`` (stdlib-wrapped loggers have no ``msg``).
    is_logger = hasattr(audit, "info") and hasattr(audit, "bind")
    if audit is None or (not isinstance(audit, bool) and not callable(audit) and not is_logger):
        raise ConfigError(f"audit={audit!r}: expected True/False, a structlog logger, or a callable(event_dict)")
    for name in ("orphan_timeout", "shutdown_timeout"):
        if name in merged:
            timeout = merged[name]
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
                raise ConfigError(f"{given(name)}: expected a positive number of seconds")
            merged[name] = float(timeout)
    if "audit_checkpoint_seconds" in merged:
        seconds = merged["audit_checkpoint_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ConfigError(f"{given('audit_checkpoint_seconds')}: expected a positive number of seconds")
        merged["audit_checkpoint_seconds"] = float(seconds)
    if merged.get("audit_durability", "write") not in ("write", "fsync"):
        raise ConfigError(f"{given('audit_durability')}: expected 'write' or 'fsync'")
    if merged.get("audit_key") is not None:
        key = merged["audit_key"]
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(key, bytes) or not key:  # the value itself is a secret: not in the message
            raise ConfigError("audit_key: expected a non-empty string or bytes")
        merged["audit_key"] = key
    for name in ("max_in_flight", "max_value_length", "audit_checkpoint_lines"):
        if name in merged:
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{given(name)}: expected a positive integer")
    actor = merged.get("actor")
    if actor is not None and not callable(actor):
        raise ConfigError(f"actor={actor!r}: expected a callable returning the acting user's name")
    for name in ("service_name", "audit_file"):
        value = merged.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name}={value!r}: expected a string")
    for name, method in _PROVIDER_METHODS.items():
        value = merged.get(name)
        if value is not None and not callable(getattr(value, method, None)):
            raise ConfigError(
                f"{name}={value!r}: expected an OpenTelemetry {name.replace('_', ' ')} (an object with {method}())"
            )
    return Options(**merged)
