from django.urls import path

from apps.tuning import views

app_name = "tuning"
urlpatterns = [
    path("", views.customize, name="customize"),
    path("estimate", views.estimate, name="estimate"),
    path("files/<str:public_id>/", views.file_detail, name="file"),
    path("jobs/new", views.job_create, name="job-create"),
    path("jobs/<str:public_id>/", views.job_detail, name="job"),
    path("jobs/<str:public_id>/status", views.job_status, name="job-status"),
    path("jobs/<str:public_id>/cancel", views.job_cancel, name="job-cancel"),
]
