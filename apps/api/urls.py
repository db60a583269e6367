from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.api import views

router = SimpleRouter()
router.register("apps", views.AppViewSet, basename="app")
router.register("categories", views.CategoryViewSet, basename="category")
router.register("runs", views.RunViewSet, basename="run")
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("files", views.FileViewSet, basename="file")
router.register("jobs", views.JobViewSet, basename="job")
router.register("models", views.RegisteredModelViewSet, basename="model")

app_name = "api"
urlpatterns = [
    path("usage/", views.UsageView.as_view(), name="usage"),
    path("me/", views.MeView.as_view(), name="me"),
    *router.urls,
]
