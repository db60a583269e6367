"""Cursor pagination for the native API: stable under inserts, opaque `next`/`previous` links, `limit` up to 100."""

from rest_framework.pagination import CursorPagination


class StoreCursorPagination(CursorPagination):
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    ordering = ("-created_at", "-id")

    def get_ordering(self, request, queryset, view):
        # Each view names its own order (a unique last field keeps the cursor exact on ties).
        return getattr(view, "cursor_ordering", None) or self.ordering
