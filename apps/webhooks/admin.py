from django.contrib import admin

from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["public_id", "owner", "url", "enabled", "consecutive_failures", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["public_id", "url", "owner__username"]
    exclude = ["secret", "previous_secret"]  # signing secrets are shown to their owner once, to nobody else
    readonly_fields = ["public_id", "owner", "consecutive_failures", "disabled_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["public_id", "endpoint", "event_type", "status", "attempts", "created_at"]
    list_filter = ["status", "event_type"]
    search_fields = ["public_id", "event_id"]


admin.site.register(WebhookAttempt)
