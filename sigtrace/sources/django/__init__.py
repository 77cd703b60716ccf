"""The Django source: Django's writes as spans and audit events (:mod:`sigtrace.sources.django.source`).

A project enables it with the app ``sigtrace.django`` (``sigtrace/django/``); importing this package
imports no Django module. See docs/sources/django.md.
"""

from __future__ import annotations

__all__: list[str] = []
