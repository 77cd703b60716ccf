"""Models of the Django tests: a unique field (IntegrityError), a cascade, a many-to-many, inheritance."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100, unique=True)
    email = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        app_label = "testapp"


class Tag(models.Model):
    label = models.CharField(max_length=50)

    class Meta:
        app_label = "testapp"


class Article(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="articles")
    tags = models.ManyToManyField(Tag, related_name="articles")
    views = models.IntegerField(default=0)

    class Meta:
        app_label = "testapp"


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()

    class Meta:
        app_label = "testapp"


class Guarded(models.Model):
    """A row that a PROTECT foreign key keeps from being deleted."""

    author = models.ForeignKey(Author, on_delete=models.PROTECT, related_name="guards")

    class Meta:
        app_label = "testapp"


class Place(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "testapp"


class Restaurant(Place):
    """Multi-table inheritance: one save writes two tables."""

    stars = models.IntegerField(default=0)

    class Meta:
        app_label = "testapp"


class Team(models.Model):
    """A many-to-many with a custom through model (Django cannot ignore conflicts there: no fast add)."""

    name = models.CharField(max_length=50)
    members = models.ManyToManyField(Author, through="Membership", related_name="teams")

    class Meta:
        app_label = "testapp"


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")

    class Meta:
        app_label = "testapp"


class WrappedPk:
    """A primary key value whose ``__str__`` returns an int (as Django's own custom_pk tests have): str() raises."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<WrappedPk: {self.value}>"

    def __str__(self) -> str:
        return self.value  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, WrappedPk) else other)

    def __hash__(self) -> int:
        return hash(self.value)


class WrappedAutoField(models.BigAutoField):
    def from_db_value(self, value: object, expression: object, connection: object) -> WrappedPk | None:
        return None if value is None else WrappedPk(value)

    def get_prep_value(self, value: object) -> int | None:
        if value is None:
            return None
        return int(value.value if isinstance(value, WrappedPk) else value)  # type: ignore[call-overload]


class Ticket(models.Model):
    id = WrappedAutoField(primary_key=True)
    title = models.CharField(max_length=50)

    class Meta:
        app_label = "testapp"
