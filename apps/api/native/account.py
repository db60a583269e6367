"""/api/v1: The caller's account: usage and identity."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.chat.selectors import usage_summary
from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin


class UsageView(StoreAPIMixin, APIView):
    """Requests and tokens of the last days, per app or model and per API key."""

    @extend_schema(responses=s.UsageSerializer)
    def get(self, request):
        summary = usage_summary(user=request.user)

        def row(name, r):
            return {"name": name, "requests": r["requests"], "prompt_tokens": r["prompt"] or 0, "completion_tokens": r["completion"] or 0}

        totals = summary["totals"]
        return Response({
            "days": summary["days"], "requests": totals["requests"], "prompt_tokens": totals["prompt"] or 0,
            "completion_tokens": totals["completion"] or 0,
            "by_app_or_model": [row(r["app__name"] or r["model"], r) for r in summary["by_target"]],
            "by_key": [row(f"{r['api_key__name']} ({r['api_key__prefix']}…)", r) for r in summary["by_key"]],
        })


class MeView(StoreAPIMixin, APIView):
    """Who the key or session belongs to."""

    @extend_schema(responses=inline_serializer("Me", {"username": serializers.CharField(), "email": serializers.EmailField(),
                                                      "date_joined": serializers.DateTimeField(), "key": serializers.CharField(allow_null=True)}))
    def get(self, request):
        user = request.user
        return Response({"username": user.username, "email": user.email, "date_joined": user.date_joined,
                         "key": getattr(request.auth, "name", None)})  # None for a browser session
