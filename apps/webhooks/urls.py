from django.urls import path

from apps.webhooks import views

app_name = "webhooks"
urlpatterns = [
    path("new", views.endpoint_new, name="new"),
    path("<str:public_id>/", views.endpoint_detail, name="detail"),
    path("<str:public_id>/rotate", views.endpoint_rotate, name="rotate"),
    path("<str:public_id>/delete", views.endpoint_delete, name="delete"),
]
