"""Pages of webhooks: the panel on the account page (templatetags), a new endpoint and its secret (shown once), an
endpoint's settings and delivery log, a new secret (shown once), deletion."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.errors import NotFound, StoreError
from apps.webhooks import selectors, services
from apps.webhooks.forms import EndpointEditForm, EndpointForm

ACCOUNT_PANEL = "/accounts/#webhooks"


def _endpoint(request, public_id):
    try:
        return selectors.access_endpoint(user=request.user, public_id=public_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc


def _add_error(form, exc: StoreError) -> None:
    form.add_error(exc.param if exc.param in form.fields else None, exc.message)


@login_required
@require_POST
def endpoint_new(request):
    form = EndpointForm(request.POST)
    if form.is_valid():
        try:
            endpoint, secret = services.webhook_endpoint_create(owner=request.user, **form.cleaned_data)
        except StoreError as exc:
            _add_error(form, exc)
        else:
            # Shown on this one response only: no page or answer shows the secret again.
            return render(request, "webhooks/secret.html", {"endpoint": endpoint, "secret": secret, "created": True})
    errors = [e for field_errors in form.errors.values() for e in field_errors]
    messages.error(request, _("The webhook endpoint was not added: %(errors)s") % {"errors": " ".join(errors)})
    return redirect(ACCOUNT_PANEL)


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_detail(request, public_id):
    endpoint = _endpoint(request, public_id)
    initial = {"url": endpoint.url, "description": endpoint.description, "event_types": endpoint.event_types,
               "enabled": endpoint.enabled}
    form = EndpointEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.webhook_endpoint_update(endpoint=endpoint, **form.cleaned_data)
        except StoreError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, _("The webhook endpoint was saved."))
            return redirect("webhooks:detail", public_id=endpoint.public_id)
    page = Paginator(selectors.delivery_list(endpoint=endpoint), 25).get_page(request.GET.get("page"))
    return render(request, "webhooks/endpoint.html", {"endpoint": endpoint, "form": form, "deliveries": page},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def endpoint_rotate(request, public_id):
    endpoint = _endpoint(request, public_id)
    secret = services.webhook_secret_rotate(endpoint=endpoint, keep_old_secret=request.POST.get("keep_old") == "on")
    return render(request, "webhooks/secret.html", {"endpoint": endpoint, "secret": secret, "created": False})


@login_required
@require_POST
def endpoint_delete(request, public_id):
    endpoint = _endpoint(request, public_id)
    services.webhook_endpoint_delete(endpoint=endpoint)
    messages.info(request, _("The webhook endpoint %(url)s was deleted.") % {"url": endpoint.url})
    return redirect(ACCOUNT_PANEL)
