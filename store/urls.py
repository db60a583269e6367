from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("apps.core.urls")),
    path("", include("apps.catalog.urls")),
    path("accounts/", include("apps.accounts.urls")),
    path("models/", include("apps.registry.urls")),
    path("customize/", include("apps.tuning.urls")),
    path("v1/", include("apps.api.urls_openai")),
    path("admin/", admin.site.urls),
]

urlpatterns += [path("i18n/", include("django.conf.urls.i18n"))]
