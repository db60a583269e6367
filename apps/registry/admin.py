from django.contrib import admin

from apps.registry.models import (
    MergedWeights,
    ModelAlias,
    ModelAliasMove,
    ModelVersion,
    RegisteredModel,
)


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["number", "status", "kind", "base_version", "size_bytes", "created_by_job", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "visibility", "created_at"]
    list_filter = ["visibility"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["name", "folder", "created_at", "updated_at"]
    inlines = [ModelVersionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: the admin shows them and never edits files or checksums."""

    list_display = ["__str__", "status", "kind", "size_bytes", "created_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["__str__", "updated_at"]
    readonly_fields = ["registered_model", "name", "version"]


@admin.register(ModelAliasMove)
class ModelAliasMoveAdmin(admin.ModelAdmin):
    list_display = ["__str__", "moved_by", "moved_at"]
    readonly_fields = ["registered_model", "alias", "from_version", "to_version", "moved_by", "moved_at"]


@admin.register(MergedWeights)
class MergedWeightsAdmin(admin.ModelAdmin):
    """Built by a task: the admin shows each build's state and why it failed; deleting a row lets the next
    request build again (the folder is replaced then)."""

    list_display = ["__str__", "status", "size_bytes", "requested_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in MergedWeights._meta.fields]

    def has_add_permission(self, request):
        return False
