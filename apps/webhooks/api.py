"""/api/v1/webhooks: the caller's webhook endpoints (shaped as OpenAI's webhook_endpoint object) and their delivery
log. The signing secret is in the answer that creates or rotates it, and in no other."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from apps.api.native.base import StoreAPIMixin
from apps.webhooks import selectors, services
from apps.webhooks.models import (
    JOB_EVENT_TYPES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


class EndpointSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    object = serializers.SerializerMethodField()
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=JOB_EVENT_TYPES))
    signing_secret_hint = serializers.CharField(source="secret_hint", help_text="The secret's last characters.")
    disabled_reason = serializers.CharField(help_text="Why the store disabled the endpoint (empty: it did not).")
    consecutive_failures = serializers.IntegerField(help_text="Failed attempts in a row since the last success.")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "object", "url", "description", "event_types", "enabled", "signing_secret_hint",
                  "consecutive_failures", "disabled_reason", "disabled_at", "created_at", "updated_at"]

    def get_object(self, endpoint) -> str:
        return "webhook_endpoint"


class EndpointWithSecretSerializer(EndpointSerializer):
    signing_secret = serializers.SerializerMethodField(help_text="`whsec_...`: shown in this answer only. Keep it.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "signing_secret"]

    def get_signing_secret(self, endpoint) -> str:
        return self.context["signing_secret"]


class EndpointInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="https:// (http:// only where the store allows it), a public host.")
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=JOB_EVENT_TYPES), required=False,
                                        default=list(JOB_EVENT_TYPES), help_text="All three job events by default.")
    enabled = serializers.BooleanField(required=False, default=True)


class EndpointUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=JOB_EVENT_TYPES), required=False)
    enabled = serializers.BooleanField(required=False, help_text="true after a disabling starts its failure count again.")


class RotateInputSerializer(serializers.Serializer):
    keep_old_secret_active_for_24_hours = serializers.BooleanField(
        required=False, default=False, help_text="Sign with the old secret too for 24 hours (as OpenAI's).")


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "status_code", "error", "response_excerpt", "duration_ms", "created_at"]


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", help_text="The `webhook-id` header: the same on every attempt.")
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "event_id", "event_type", "status", "attempts", "next_attempt_at", "created_at", "attempt_log"]


class WebhookEndpointViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Webhook endpoints: the store POSTs `fine_tuning.job.succeeded|failed|cancelled` to them, signed as the
    Standard Webhooks spec says (`webhook-id`, `webhook-timestamp`, `webhook-signature`)."""

    serializer_class = EndpointSerializer
    parser_classes = [JSONParser]
    lookup_value_regex = "we_[0-9a-f]+"

    def get_queryset(self):
        return selectors.endpoint_list(user=self.request.user)

    def _endpoint(self, pk) -> WebhookEndpoint:
        return selectors.access_endpoint(user=self.request.user, public_id=pk)

    def _with_secret(self, endpoint, secret, code=status.HTTP_200_OK):
        return Response(EndpointWithSecretSerializer(endpoint, context={"signing_secret": secret}).data, status=code)

    @extend_schema(request=EndpointInputSerializer, responses={201: EndpointWithSecretSerializer})
    def create(self, request):
        serializer = EndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(owner=request.user, **serializer.validated_data)
        return self._with_secret(endpoint, secret, status.HTTP_201_CREATED)

    def retrieve(self, request, pk):
        return Response(EndpointSerializer(self._endpoint(pk)).data)

    @extend_schema(request=EndpointUpdateSerializer, responses=EndpointSerializer)
    def partial_update(self, request, pk):
        endpoint = self._endpoint(pk)
        serializer = EndpointUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data)

    def destroy(self, request, pk):
        services.webhook_endpoint_delete(endpoint=self._endpoint(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RotateInputSerializer, responses=EndpointWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk):
        """A new signing secret, in this answer only."""
        endpoint = self._endpoint(pk)
        serializer = RotateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = services.webhook_secret_rotate(
            endpoint=endpoint, keep_old_secret=serializer.validated_data["keep_old_secret_active_for_24_hours"])
        return self._with_secret(endpoint, secret)

    @extend_schema(responses=DeliverySerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=DeliverySerializer)
    def deliveries(self, request, pk):
        """The delivery log: each event sent to the endpoint, with every attempt (status code, error, duration)."""
        return self.paged(selectors.delivery_list(endpoint=self._endpoint(pk)), DeliverySerializer,
                          ordering=("-created_at", "-id"))
