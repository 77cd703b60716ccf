"""Django: model signals as spans and audit events, the request's user as the audit actor.

Enable it with one line in ``settings.py``::

    INSTALLED_APPS = [..., "sigtrace.sources.django"]
    SIGTRACE = {"service_name": "shop"}                     # optional: options of sigtrace.install()
    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "sigtrace.sources.django.middleware.ActorMiddleware"]

The source itself lives in :mod:`sigtrace.sources.django.source`; importing this package imports
no Django module, so it is safe to list in ``INSTALLED_APPS`` and to import before settings exist.
See docs/sources/django.md.
"""

from __future__ import annotations

__all__: list[str] = []
