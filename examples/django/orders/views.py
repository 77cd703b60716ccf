"""Ordinary Django views: nothing in them mentions sigtrace."""

import json

from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from orders.models import Order, OrderLine, Product, Tag


def _body(request: HttpRequest) -> dict:
    return json.loads(request.body or b"{}")


@csrf_exempt
@require_POST
def create_product(request: HttpRequest) -> JsonResponse:
    data = _body(request)
    try:
        product = Product.objects.create(sku=data["sku"], stock=data.get("stock", 0))
    except IntegrityError:
        return JsonResponse({"error": "duplicate sku"}, status=409)
    return JsonResponse({"id": product.pk}, status=201)


@csrf_exempt
@require_POST
def restock(request: HttpRequest) -> JsonResponse:
    rows = Product.objects.filter(stock__lt=10).update(stock=F("stock") + 10)  # QuerySet.update: no signal
    return JsonResponse({"restocked": rows})


@csrf_exempt
@login_required
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    data = _body(request)
    with transaction.atomic():
        product = Product.objects.get(sku=data["sku"])
        order = Order.objects.create(owner=request.user, product=product, quantity=data["quantity"])
        OrderLine.objects.bulk_create(OrderLine(order=order, note=note) for note in data.get("notes", []))
        tags = [Tag.objects.get_or_create(name=name)[0] for name in data.get("tags", [])]
        order.tags.add(*tags)
    return JsonResponse({"id": order.pk}, status=201)


@csrf_exempt
@login_required
@require_http_methods(["DELETE"])
def cancel_order(request: HttpRequest, pk: int) -> JsonResponse:
    order = Order.objects.get(pk=pk, owner=request.user)
    order.delete()  # cascades to its lines and tag rows
    return JsonResponse({"deleted": pk})
