from __future__ import annotations

from django.urls import path

from tests.sources.django import views

urlpatterns = [
    path("articles/", views.create_article),
    path("articles/async/", views.create_article_async),
    path("authors/duplicate/", views.duplicate_author),
    path("authors/fail/", views.create_author_then_fail),
]
