"""Errors that name what is wrong: one boolean parser everywhere, the variable named when the value came from it,
bad providers and audit files as ConfigErrors, misspelled variables warned about."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import sigtrace
from sigtrace._config import ConfigError, parse_bool, resolve_options, warn_unknown_variables
from sigtrace.core import safety

SPELLINGS = {"true": True, "FALSE": False, "1": True, "0": False, "Yes": True, "no": False, " on ": True, "Off": False}


@pytest.mark.parametrize(("text", "expected"), SPELLINGS.items())
def test_every_boolean_variable_takes_the_same_spellings(text: str, expected: bool) -> None:
    for variable, option in (("SIGTRACE_METRICS", "metrics"), ("SIGTRACE_AUDIT_READS", "audit_reads")):
        assert getattr(resolve_options({}, {variable: text}), option) is expected
    assert resolve_options({"capture_values": text}).capture_values is expected
    assert parse_bool(text, "x") is expected


@pytest.mark.parametrize("text", ["banana", "2", "enabled", "tru"])
def test_anything_else_is_an_error_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"SIGTRACE_METRICS='{text}': expected one of true/false/1/0/yes/no/on/off"):
        resolve_options({}, {"SIGTRACE_METRICS": text})
    with pytest.raises(ConfigError, match=r"^metrics="):
        resolve_options({"metrics": text})
    with pytest.raises(ConfigError, match=r"SIGTRACE_STRICT='banana'"):
        resolve_options({}, {"SIGTRACE_STRICT": "banana"})


def test_strict_mode_reads_the_same_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    with safety.strict(enabled=False):
        pass
    for text, expected in SPELLINGS.items():
        monkeypatch.setenv("SIGTRACE_STRICT", text)
        assert safety.is_strict() is expected
    monkeypatch.setenv("SIGTRACE_STRICT", "banana")
    assert safety.is_strict() is False  # never raises inside the safety net; install() rejects it
    with pytest.raises(ConfigError, match="SIGTRACE_STRICT='banana'"):
        sigtrace.install(sources=["blinker"], audit=False)
    assert not sigtrace.is_installed()


def test_django_source_variables_use_the_same_parser() -> None:
    pytest.importorskip("django")
    from sigtrace.sources.django.source import django_options

    assert django_options({}, {"SIGTRACE_DJANGO_TRACE_DELETE": "Off"}).trace_delete is False
    assert django_options({"trace_delete": "no"}, {}).trace_delete is False
    with pytest.raises(ConfigError, match=r"SIGTRACE_DJANGO_TRACE_DELETE='maybe'"):
        django_options({}, {"SIGTRACE_DJANGO_TRACE_DELETE": "maybe"})
    with pytest.raises(ConfigError, match=r'settings.SIGTRACE\["django"\]\["trace_m2m"\]=\'nah\''):
        django_options({"trace_m2m": "nah"}, {})


def test_out_of_range_values_name_the_variable_they_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^SIGTRACE_ORPHAN_TIMEOUT='-3': expected a positive number of seconds"):
        resolve_options({}, {"SIGTRACE_ORPHAN_TIMEOUT": "-3"})
    with pytest.raises(ConfigError, match=r"^SIGTRACE_MAX_IN_FLIGHT='0': expected a positive integer"):
        resolve_options({}, {"SIGTRACE_MAX_IN_FLIGHT": "0"})
    with pytest.raises(ConfigError, match=r"^SIGTRACE_SHUTDOWN_TIMEOUT='0'"):
        resolve_options({}, {"SIGTRACE_SHUTDOWN_TIMEOUT": "0"})
    with pytest.raises(ConfigError, match=r"^orphan_timeout=-3: expected a positive number"):
        resolve_options({"orphan_timeout": -3}, {"SIGTRACE_ORPHAN_TIMEOUT": "10"})  # the keyword won
    assert resolve_options({}, {"SIGTRACE_SHUTDOWN_TIMEOUT": "2.5"}).shutdown_timeout == 2.5


@pytest.mark.parametrize("variable", ["SIGTRACE_SOURCES", "SIGTRACE_EXCLUDE", "SIGTRACE_REDACT"])
def test_a_list_variable_naming_nothing_is_an_error(variable: str) -> None:
    with pytest.raises(ConfigError, match=rf"{variable}=',': names nothing"):
        resolve_options({}, {variable: ","})
    assert resolve_options({}, {variable: ""}) == resolve_options({}, {})  # empty: unset


@pytest.mark.parametrize("option", ["tracer_provider", "meter_provider", "logger_provider"])
def test_a_provider_that_is_none_is_a_config_error(option: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{option}='x': expected an OpenTelemetry"):
        sigtrace.install(sources=["blinker"], **{option: "x"})
    assert not sigtrace.is_installed()


def test_an_audit_file_in_a_missing_directory_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no" / "such" / "a.jsonl"
    with pytest.raises(ConfigError, match=r"^audit_file=.*the directory .* does not exist"):
        sigtrace.install(sources=["blinker"], audit_file=str(missing))
    monkeypatch.setenv("SIGTRACE_AUDIT_FILE", str(missing))
    with pytest.raises(ConfigError, match=r"^SIGTRACE_AUDIT_FILE=.*does not exist"):
        sigtrace.install(sources=["blinker"])
    monkeypatch.delenv("SIGTRACE_AUDIT_FILE")
    with pytest.raises(ConfigError, match=r"is a directory"):
        sigtrace.install(sources=["blinker"], audit_file=str(tmp_path))
    assert not sigtrace.is_installed()


def test_an_audit_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        target = locked / "a.jsonl"
        try:
            target.touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user may write into a read-only directory (root)")
        with pytest.raises(ConfigError, match=r"audit_file=.*cannot open it for appending"):
            sigtrace.install(sources=["blinker"], audit_file=str(target))
    finally:
        locked.chmod(0o700)
    assert not sigtrace.is_installed()


def test_a_misspelled_variable_is_warned_about_once_naming_the_closest(caplog: pytest.LogCaptureFixture) -> None:
    env = {"SIGTRACE_ORPHAN_TIMOUT": "3", "SIGTRACE_METRICS": "1", "SIGTRACE_STRICT": "1", "OTHER": "x"}
    with caplog.at_level(logging.WARNING, logger="sigtrace"):
        assert warn_unknown_variables(env) == ["SIGTRACE_ORPHAN_TIMOUT"]
        assert warn_unknown_variables(env) == []  # once
    (record,) = [r for r in caplog.records if "SIGTRACE_ORPHAN_TIMOUT" in r.getMessage()]
    assert "did you mean SIGTRACE_ORPHAN_TIMEOUT?" in record.getMessage()


def test_install_warns_about_a_misspelled_variable() -> None:
    script = "import logging, sigtrace; logging.basicConfig(); sigtrace.install(sources=['blinker'], audit=False)"
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    env["SIGTRACE_ORPHAN_TIMOUT"] = "30"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unknown environment variable SIGTRACE_ORPHAN_TIMOUT is ignored; did you mean SIGTRACE_ORPHAN_TIMEOUT?" in (
        out.stderr
    )


def test_a_misspelled_django_variable_is_warned_about_by_the_django_source(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("django")
    from sigtrace.sources.django.source import django_options

    with caplog.at_level(logging.WARNING, logger="sigtrace"):
        assert django_options({}, {"SIGTRACE_DJANGO_TRACE_DELTE": "0"}).trace_delete is True
        assert warn_unknown_variables({"SIGTRACE_DJANGO_TRACE_DELTE": "0"}) == []  # the source's, not install()'s
    assert "did you mean SIGTRACE_DJANGO_TRACE_DELETE?" in caplog.text
