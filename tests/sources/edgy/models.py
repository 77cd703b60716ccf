"""Edgy models for the tests, defined per database (a fresh registry each time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import edgy
from edgy.core.signals import Broadcaster, Signal

LIFECYCLE = (
    "pre_save",
    "post_save",
    "pre_update",
    "post_update",
    "pre_delete",
    "post_delete",
    "pre_bulk",
    "post_bulk",
    "pre_relation_add",
    "post_relation_add",
    "pre_relation_remove",
    "post_relation_remove",
)


@dataclass
class Models:
    database: edgy.Database
    registry: edgy.Registry
    User: Any
    Tag: Any
    Post: Any
    Rewired: Any
    own_signals: Broadcaster


def define_models(url: str) -> Models:
    database = edgy.Database(url)
    reg = edgy.Registry(database=database)

    class Tag(edgy.Model):
        name: str = edgy.CharField(max_length=100)

        class Meta:
            registry = reg

    class User(edgy.Model):
        name: str = edgy.CharField(max_length=100, unique=True)
        age: int = edgy.IntegerField(default=0)
        password: str = edgy.CharField(max_length=100, default="")
        tags = edgy.ManyToMany(Tag, related_name="users")

        class Meta:
            registry = reg

    class Post(edgy.Model):
        user = edgy.ForeignKey(User, related_name="posts", null=True, on_delete=edgy.CASCADE)
        title: str = edgy.CharField(max_length=100)

        class Meta:
            registry = reg

    own = Broadcaster({name: Signal() for name in LIFECYCLE})

    class Rewired(edgy.Model):
        """A model whose Meta replaces every lifecycle signal with its own (invisible to global receivers)."""

        code: str = edgy.CharField(max_length=20, unique=True)

        class Meta:
            registry = reg
            signals = own

    return Models(database, reg, User, Tag, Post, Rewired, own)
