"""``ActorMiddleware``: the authenticated user of each request names the actor of its audit events.

Place it after ``django.contrib.auth.middleware.AuthenticationMiddleware``. Sync and async: under
ASGI it awaits ``request.auser()`` (no synchronous database access in the event loop). The name is
``user.get_username()``, or what ``settings.SIGTRACE["django"]["actor"](user)`` returns; anonymous
users name no actor. The actor is set for the request's context only and restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from sigtrace.core import safety
from sigtrace.core.context import set_actor

__all__ = ["ActorMiddleware", "actor_name"]

logger = logging.getLogger("sigtrace")
_warned = False
#: The safety net of every request (one guard, reused).
_GUARD = safety.guard("source.django.middleware")


def actor_name(user: Any, name_of: Callable[[Any], str | None] | None = None) -> str | None:
    """The audit actor of a user: ``None`` for no user or an anonymous one."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if name_of is not None:
        value = name_of(user)
        return None if value is None else str(value)
    get_username = getattr(user, "get_username", None)
    return str(get_username()) if callable(get_username) else str(user)


def _missing_user() -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "sigtrace ActorMiddleware: request has no user; place it after "
            "django.contrib.auth.middleware.AuthenticationMiddleware"
        )


class ActorMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        self.name_of: Callable[[Any], str | None] | None = None
        with _GUARD:
            from sigtrace.sources.django.source import django_options

            self.name_of = django_options().actor
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        name: str | None = None
        with _GUARD:
            user = getattr(request, "user", None)
            if user is None:
                _missing_user()
            name = actor_name(user, self.name_of)
        with set_actor(name):
            return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        name: str | None = None
        with _GUARD:
            auser = getattr(request, "auser", None)
            if auser is None:
                _missing_user()
                user = None
            else:
                user = await auser()
            name = actor_name(user, self.name_of)
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        with set_actor(name):
            return await get_response(request)
