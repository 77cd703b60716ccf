from django.urls import path
from orders import views

urlpatterns = [
    path("products/", views.create_product),
    path("products/restock/", views.restock),
    path("orders/", views.place_order),
    path("orders/<int:pk>/", views.cancel_order),
]
