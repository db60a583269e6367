from django.urls import path

from apps.chat import views

app_name = "chat"
urlpatterns = [
    path("apps/<slug:slug>/run", views.app_run, name="app-run"),
    path("build/<slug:slug>/preview", views.build_preview, name="build-preview"),
    path("conversations/<int:pk>/", views.conversation_messages, name="conversation"),
    path("conversations/<int:pk>/rename", views.conversation_rename_view, name="conversation-rename"),
    path("conversations/<int:pk>/delete", views.conversation_delete_view, name="conversation-delete"),
]
