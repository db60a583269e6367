"""What every view of the native API (/api/v1) shares: authentication, permission, cursor pages."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated

from apps.api.authentication import BearerAPIKeyAuthentication
from apps.api.pagination import StoreCursorPagination


class StoreAPIMixin:
    """Bearer keys for programs, the session (with CSRF) for the browser; logged-in callers only."""

    authentication_classes = [BearerAPIKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    pagination_class = StoreCursorPagination
    cursor_ordering: tuple[str, ...] | None = None

    def paged(self, queryset, serializer_class, *, ordering: tuple[str, ...]):
        self.cursor_ordering = ordering
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True, context=self.get_serializer_context()).data)


def bool_param(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")
