"""``settings.SIGTRACE`` booleans take the spellings of every other boolean (sigtrace._config.parse_bool)."""

from __future__ import annotations

import pytest

import sigtrace


def test_django_enabled_setting_takes_the_same_spellings() -> None:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from sigtrace.django.apps import install_from_settings

    previous = getattr(settings, "SIGTRACE", None)
    try:
        settings.SIGTRACE = {"enabled": "no", "sources": ["blinker"]}
        assert install_from_settings() is None and not sigtrace.is_installed()
        settings.SIGTRACE = {"enabled": "banana"}
        with pytest.raises(ImproperlyConfigured, match=r'settings.SIGTRACE\["enabled"\]=\'banana\''):
            install_from_settings()
        settings.SIGTRACE = {"enabled": "On", "sources": ["blinker"], "audit": False}
        assert install_from_settings() is not None
    finally:
        sigtrace.uninstall()
        settings.SIGTRACE = previous
