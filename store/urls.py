from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

urlpatterns = [
    path("", include("apps.core.urls")),
    path("", include("apps.catalog.urls")),
    path("", include("apps.chat.urls")),
    path("accounts/webhooks/", include("apps.webhooks.urls")),
    path("accounts/", include("apps.accounts.urls")),
    path("models/", include("apps.registry.urls")),
    path("customize/", include("apps.tuning.urls")),
    path("feedback/", include("apps.feedback.urls")),
    path("compare/", include("apps.compare.urls")),
    path("api/v1/", include("apps.api.urls")),
    path("v1/", include("apps.api.urls_openai")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[AllowAny]), name="api-docs"),
    path("admin/", admin.site.urls),
]

urlpatterns += [
    path("i18n/", include("django.conf.urls.i18n")),
    # The words of static/js (the djangojs domain) in the page's language: gettext() and interpolate() for scripts.
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
]

handler404 = "apps.core.views.page_not_found"
