from django.contrib import admin

from apps.tuning.models import FineTuningJob, JobEvent, TrainingFile


@admin.register(TrainingFile)
class TrainingFileAdmin(admin.ModelAdmin):
    list_display = ["public_id", "owner", "filename", "format", "status", "example_count", "bytes", "created_at"]
    list_filter = ["status", "format"]
    readonly_fields = ["public_id", "problems", "preview"]


class JobEventInline(admin.TabularInline):
    model = JobEvent
    fields = ["created_at", "level", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(admin.ModelAdmin):
    list_display = ["public_id", "owner", "method", "status", "step", "total_steps", "attempts", "fine_tuned_model", "created_at"]
    list_filter = ["status", "method"]
    readonly_fields = ["public_id", "lease_owner", "lease_expires_at", "heartbeat_at", "dispatched_at", "lost_messages", "training_seconds",
                       "result_version"]
    inlines = [JobEventInline]
