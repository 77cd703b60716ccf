"""sigtrace in a Django project: the app that installs it and the middleware that names the actor.

Enable it with one line in ``settings.py``::

    INSTALLED_APPS = [..., "sigtrace.django"]
    SIGTRACE = {"service_name": "shop"}                     # optional: options of sigtrace.install()
    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "sigtrace.django.ActorMiddleware"]

Entry points, like ``sigtrace/cli.py`` and ``sigtrace/instrumentor.py``: the source that turns
Django's writes into operations is ``sigtrace/sources/django/``. Importing this package imports no
Django module (``ActorMiddleware`` is loaded when first asked for), so it is safe to list in
``INSTALLED_APPS`` and to import before settings exist. See docs/sources/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigtrace.django.middleware import ActorMiddleware

__all__ = ["ActorMiddleware"]


def __getattr__(name: str) -> Any:
    if name == "ActorMiddleware":
        from sigtrace.django.middleware import ActorMiddleware

        return ActorMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
