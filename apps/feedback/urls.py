from django.urls import path

from apps.feedback import views

app_name = "feedback"
urlpatterns = [
    path("", views.feedback_page, name="page"),
    path("export", views.feedback_export_view, name="export"),
]
