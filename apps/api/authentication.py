from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions

from apps.accounts.services import api_key_authenticate


class BearerAPIKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` with a key made on the account page or by `createapikey`."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _sep, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed(_("Send your API key as 'Authorization: Bearer <key>'."))
        key = api_key_authenticate(raw.strip())
        if key is None:
            raise exceptions.AuthenticationFailed(_("Incorrect API key provided, or the key was revoked or expired."))
        return key.user, key

    def authenticate_header(self, request):
        return self.keyword
