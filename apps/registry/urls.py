from django.urls import path

from apps.registry import views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="model-list"),
    path("<str:name>/", views.model_detail, name="model-detail"),
    path("<str:name>/v<int:number>/", views.version_detail, name="version-detail"),
    path("<str:name>/v<int:number>/download", views.version_download, name="version-download"),
    path("<str:name>/delete", views.model_delete, name="model-delete"),
    path("<str:name>/v<int:number>/make-latest", views.version_make_latest, name="version-make-latest"),
]
