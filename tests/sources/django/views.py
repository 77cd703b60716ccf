"""Views of the request -> model -> SQL tests (sync and async)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from tests.sources.django.testapp.models import Article, Author


def create_article(request: HttpRequest) -> JsonResponse:
    author, _ = Author.objects.get_or_create(name=request.GET.get("author", "ada"))
    article = Article.objects.create(title=request.GET.get("title", "hello"), author=author)
    return JsonResponse({"id": article.pk})


def duplicate_author(request: HttpRequest) -> JsonResponse:
    Author.objects.create(name="dup")
    Author.objects.create(name="dup")  # IntegrityError -> 500
    return JsonResponse({})


async def create_article_async(request: HttpRequest) -> JsonResponse:
    author = Author(name=request.GET.get("author", "grace"))
    await author.asave()
    article = Article(title="async", author=author)
    await article.asave()
    return JsonResponse({"id": article.pk})
