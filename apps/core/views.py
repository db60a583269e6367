from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found as html_page_not_found

from apps.core.errors import error_body
from apps.core.health import health_report


@never_cache
@require_GET
def healthz(request):
    """Every check's status for anyone (load balancers, `make run`); what each found for staff only."""
    healthy, report = health_report(with_details=request.user.is_staff)
    return JsonResponse(report, status=200 if healthy else 503)


def terms(request):
    return render(request, "core/terms.html")


def privacy(request):
    return render(request, "core/privacy.html")


def page_not_found(request, exception):
    """The API's error shape under /api/ and /v1/ (programs read it), the store's page everywhere else."""
    if request.path.startswith(("/api/", "/v1/")):
        return JsonResponse(error_body(f"Unknown URL: {request.method} {request.path}", status=404, code="unknown_url"),
                            status=404)
    return html_page_not_found(request, exception)
