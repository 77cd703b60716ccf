"""Views of the request -> model -> SQL tests (sync and async); ``?db=`` picks the database alias."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from tests.sources.django.testapp.models import Article, Author


def create_article(request: HttpRequest) -> JsonResponse:
    db = request.GET.get("db", "default")
    author = Author(name=request.GET.get("author", "ada"))
    author.save(using=db)
    article = Article(title=request.GET.get("title", "hello"), author=author)
    article.save(using=db)
    return JsonResponse({"id": article.pk})


def duplicate_author(request: HttpRequest) -> JsonResponse:
    db = request.GET.get("db", "default")
    Author(name="dup").save(using=db)
    Author(name="dup").save(using=db)  # IntegrityError -> 500
    return JsonResponse({})


def create_author_then_fail(request: HttpRequest) -> JsonResponse:
    """Writes, then raises: under ATOMIC_REQUESTS the write is rolled back with the request."""
    db = request.GET.get("db", "default")
    Author(name=request.GET.get("author", "doomed")).save(using=db)
    raise RuntimeError("the view failed after its write")


async def create_article_async(request: HttpRequest) -> JsonResponse:
    db = request.GET.get("db", "default")
    author = Author(name=request.GET.get("author", "grace"))
    await author.asave(using=db)
    article = Article(title="async", author=author)
    await article.asave(using=db)
    return JsonResponse({"id": article.pk})
