from django.urls import path

from apps.api import openai_tuning as tuning
from apps.api import openai_views as views

app_name = "openai"
urlpatterns = [
    path("models", views.ModelListView.as_view(), name="models"),
    path("models/<str:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("chat/completions", views.ChatCompletionView.as_view(), name="chat-completions"),
    path("completions", views.CompletionView.as_view(), name="completions"),
    path("files", tuning.FileListView.as_view(), name="files"),
    path("files/<str:file_id>", tuning.FileDetailView.as_view(), name="file-detail"),
    path("files/<str:file_id>/content", tuning.FileContentView.as_view(), name="file-content"),
    path("fine_tuning/jobs", tuning.JobListView.as_view(), name="jobs"),
    path("fine_tuning/jobs/<str:job_id>", tuning.JobDetailView.as_view(), name="job-detail"),
    path("fine_tuning/jobs/<str:job_id>/events", tuning.JobEventsView.as_view(), name="job-events"),
    path("fine_tuning/jobs/<str:job_id>/checkpoints", tuning.JobCheckpointsView.as_view(), name="job-checkpoints"),
    path("fine_tuning/jobs/<str:job_id>/cancel", tuning.JobCancelView.as_view(), name="job-cancel"),
]
