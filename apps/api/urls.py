from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.api.native import account, catalog, knowledge, registry, runs, tuning
from apps.compare.api import ComparisonViewSet, LeaderboardView, VoteViewSet
from apps.feedback.api import FeedbackViewSet
from apps.webhooks.api import WebhookEndpointViewSet

router = SimpleRouter()
router.register("apps", catalog.AppViewSet, basename="app")
router.register("categories", catalog.CategoryViewSet, basename="category")
router.register("runs", runs.RunViewSet, basename="run")
router.register("conversations", runs.ConversationViewSet, basename="conversation")
router.register("files", tuning.FileViewSet, basename="file")
router.register("jobs", tuning.JobViewSet, basename="job")
router.register("models", registry.RegisteredModelViewSet, basename="model")
router.register("webhooks", WebhookEndpointViewSet, basename="webhook")
router.register("feedback", FeedbackViewSet, basename="feedback")
router.register("comparisons", ComparisonViewSet, basename="comparison")
router.register("votes", VoteViewSet, basename="vote")

app_name = "api"
urlpatterns = [
    path("usage/", account.UsageView.as_view(), name="usage"),
    path("me/", account.MeView.as_view(), name="me"),
    path("leaderboard/", LeaderboardView.as_view(), name="leaderboard"),
    path("apps/<slug:slug>/knowledge/", knowledge.KnowledgeFileViewSet.as_view({"get": "list", "post": "create"}),
         name="app-knowledge-list"),
    path("apps/<slug:slug>/knowledge/<int:pk>/",
         knowledge.KnowledgeFileViewSet.as_view({"get": "retrieve", "delete": "destroy"}), name="app-knowledge-detail"),
    *router.urls,
]
