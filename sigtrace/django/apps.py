"""``INSTALLED_APPS = [..., "sigtrace.django"]``: sigtrace installed when Django is ready.

Options come from ``settings.SIGTRACE`` (a dict of :func:`sigtrace.install` options, plus a
``"django"`` dict of Django-source options and ``"enabled": False`` to switch it all off; booleans
take True/False or true/false/1/0/yes/no/on/off, as everywhere)::

    SIGTRACE = {
        "service_name": "shop",
        "exclude": ["model:Heartbeat"],
        "django": {"trace_delete": False},   # options of the Django source: deletes untraced
    }
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

import sigtrace
from sigtrace._config import ConfigError, parse_bool

__all__ = ["SigtraceConfig", "install_from_settings"]


def install_from_settings() -> sigtrace.Installation | None:
    """Install sigtrace with ``settings.SIGTRACE``; ``None`` when ``"enabled": False``.

    A bad option is an :class:`~django.core.exceptions.ImproperlyConfigured` at start-up, as Django users expect.
    """
    raw: Any = getattr(settings, "SIGTRACE", None) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"settings.SIGTRACE={raw!r}: expected a dict of sigtrace.install() options")
    options = dict(raw)
    options.pop("django", None)  # read by the Django source itself (sigtrace.sources.django.source.django_options)
    try:
        if not parse_bool(options.pop("enabled", True), 'settings.SIGTRACE["enabled"]'):
            return None
        return sigtrace.install(**options)
    except ConfigError as exc:
        raise ImproperlyConfigured(f"settings.SIGTRACE: {exc}") from exc


class SigtraceConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "sigtrace.django"
    label = "sigtrace"
    verbose_name = "sigtrace"
    default = True

    def ready(self) -> None:
        install_from_settings()
