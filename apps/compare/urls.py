from django.urls import path

from apps.compare import views

app_name = "compare"
urlpatterns = [
    path("", views.compare, name="compare"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("start", views.comparison_start, name="start"),
    path("<int:pk>/run/<str:side>", views.answer_run, name="run"),
    path("<int:pk>/vote", views.vote, name="vote"),
]
