from django.contrib import admin

from apps.feedback.models import Feedback


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "app", "rating", "created_at")
    list_filter = ("rating",)
    raw_id_fields = ("user", "app", "message", "run")
