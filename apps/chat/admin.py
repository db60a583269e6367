from django.contrib import admin

from apps.chat.models import AppRun, Conversation


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "app", "user", "updated_at"]


@admin.register(AppRun)
class AppRunAdmin(admin.ModelAdmin):
    list_display = ["app", "user", "prompt_tokens", "completion_tokens", "finish_reason", "created_at"]
    list_filter = ["finish_reason"]
