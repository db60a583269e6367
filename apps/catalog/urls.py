from django.urls import path

from apps.catalog import views
from apps.knowledge import views as knowledge_views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("category/<slug:slug>/", views.category, name="category"),
    path("u/<str:username>/", views.creator, name="creator"),
    path("apps/<slug:slug>/", views.app_detail, name="app"),
    path("apps/<slug:slug>/review", views.review_save, name="review"),
    path("apps/<slug:slug>/report", views.report, name="report"),
    path("apps/<slug:slug>/remix", views.remix, name="remix"),
    path("media/avatars/<str:name>", views.avatar, name="avatar"),
    path("build/", views.build_list, name="build"),
    path("build/new/", views.build_new, name="build-new"),
    path("build/<slug:slug>/", views.build_edit, name="build-edit"),
    path("build/<slug:slug>/publish", views.build_publish, name="build-publish"),
    path("build/<slug:slug>/restore/<int:number>", views.build_restore, name="build-restore"),
    path("build/<slug:slug>/delete", views.build_delete, name="build-delete"),
    # The builder's knowledge files (apps/knowledge/views.py)
    path("build/<slug:slug>/knowledge/upload", knowledge_views.knowledge_upload, name="knowledge-upload"),
    path("build/<slug:slug>/knowledge/<int:pk>/delete", knowledge_views.knowledge_delete, name="knowledge-delete"),
    path("build/<slug:slug>/knowledge/status", knowledge_views.knowledge_status, name="knowledge-status"),
]
