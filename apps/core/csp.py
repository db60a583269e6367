"""A Content-Security-Policy header on every response (Django 5.2 has none built in; 6.0 does).

The policy is `settings.SECURE_CSP`: a dict of directives to lists of sources, the shape (and the setting name,
and `request.csp_nonce`) of Django 6.0's built-in CSP, so that upgrading only drops this module. The store's own
pages run no inline script and no inline style: their behaviour is in static/js (configuration reaches it as
`json_script` data, which is never executed), their look in static/css. A page that must run an inline script
(drf-spectacular's Swagger UI) marks it with `nonce="{{ request.csp_nonce }}"`: the source `NONCE` in a directive
becomes `'nonce-<random>'` on a response whose page used the nonce, and disappears from the others.
"""

from __future__ import annotations

import secrets

from django.conf import settings

NONCE = "<nonce>"  # the placeholder source that settings.SECURE_CSP writes for the request's nonce
HEADER = "Content-Security-Policy"


class _Nonce:
    """A random value made when a template first writes it; the middleware puts it in the policy only then."""

    def __init__(self):
        self.used = False
        self.value = ""

    def __str__(self) -> str:
        if not self.used:
            self.value = secrets.token_urlsafe(16)
            self.used = True
        return self.value


def policy_header(policy: dict[str, list[str]], nonce: str | None) -> str:
    """The header's value: `directive source source; ...`, the nonce placeholder replaced or dropped."""
    directives = []
    for name, sources in policy.items():
        sources = [f"'nonce-{nonce}'" if s == NONCE else s for s in sources if s != NONCE or nonce]
        directives.append(" ".join([name, *sources]))
    return "; ".join(directives)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        nonce = _Nonce()
        request.csp_nonce = nonce
        response = self.get_response(request)
        policy = getattr(settings, "SECURE_CSP", None)
        if policy and HEADER not in response:  # a view that set its own policy keeps it
            response[HEADER] = policy_header(policy, nonce.value if nonce.used else None)
        return response
