from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.forms import AccountDeleteForm, APIKeyForm, ProfileForm, SignupForm
from apps.accounts.limits import RateLimited, client_address
from apps.accounts.services import (
    api_key_create,
    api_key_revoke,
    user_signup,
    user_delete,
)
from apps.chat.selectors import usage_summary


def _safe_next(request) -> str | None:
    """The `next` address if it stays on this store (a path, or this host over this scheme); None otherwise, so
    that a link such as /accounts/signup/?next=https://evil.example/ never sends a new user away."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return None


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("accounts:account")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_signup(
                address=client_address(request.META),
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
            )
        except RateLimited as refused:
            minutes = max(1, (refused.retry_after + 59) // 60)
            form.add_error(None, ngettext(
                "Too many accounts were created from your network in the last hour. Try again in %(n)s minute.",
                "Too many accounts were created from your network in the last hour. Try again in %(n)s minutes.",
                minutes) % {"n": minutes})
            response = render(request, "accounts/signup.html", {"form": form, "next": _safe_next(request)}, status=429)
            response["Retry-After"] = str(refused.retry_after)
            return response
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome, %(name)s! Your account is ready.") % {"name": user.username})
        return redirect(_safe_next(request) or "accounts:account")
    return render(request, "accounts/signup.html", {"form": form, "next": _safe_next(request)})


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Your profile was saved."))
        return redirect("accounts:account")
    return render(request, "accounts/account.html", {
        "form": form,
        "key_form": APIKeyForm(),
        "keys": request.user.api_keys.all(),
        "usage": usage_summary(user=request.user),
    })


@login_required
@require_POST
def api_key_new(request):
    form = APIKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give the key a name (and, if you like, a number of days it is valid)."))
        return redirect("accounts:account")
    days = form.cleaned_data.get("expires_in_days")
    expires = timezone.now() + timedelta(days=days) if days else None
    key, raw = api_key_create(user=request.user, name=form.cleaned_data["name"], expires_at=expires)
    # Shown on this one response only: the store keeps a hash and can never show the key again.
    return render(request, "accounts/api_key_created.html", {"key": key, "raw": raw})


@login_required
@require_POST
def api_key_revoke_view(request, pk):
    key = request.user.api_keys.filter(pk=pk).first()
    if key is None:
        raise Http404("No such key.")
    api_key_revoke(key=key)
    messages.info(request, _("The key %(name)s was revoked; requests with it now get 401.") % {"name": key.name})
    return redirect("accounts:account")


@login_required
@require_http_methods(["GET", "POST"])
def account_delete(request):
    form = AccountDeleteForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        user = request.user
        logout(request)
        user_delete(user=user)
        messages.info(request, _("Your account and everything it owned were deleted."))
        return redirect("catalog:home")
    return render(request, "accounts/delete.html", {"form": form})
