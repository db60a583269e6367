from django.urls import path

from apps.api import openai_views as views

app_name = "openai"
urlpatterns = [
    path("models", views.ModelListView.as_view(), name="models"),
    path("models/<str:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("chat/completions", views.ChatCompletionView.as_view(), name="chat-completions"),
    path("completions", views.CompletionView.as_view(), name="completions"),
]
