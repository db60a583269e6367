from django.contrib import admin, messages

from apps.catalog.generation import catalog_changed
from apps.catalog.models import AppVersion, Category, Report, Review, StoreApp
from apps.catalog.services import link_token_sync


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    prepopulated_fields = {"slug": ["name"]}


@admin.action(description="Unlist the selected apps (they leave the catalog and their pages)")
def unlist(modeladmin, request, queryset):
    count = queryset.update(is_listed=False)
    catalog_changed()  # update() sends no signal
    modeladmin.message_user(request, f"{count} app(s) unlisted.", messages.SUCCESS)


@admin.action(description="List the selected apps again")
def relist(modeladmin, request, queryset):
    queryset.update(is_listed=True)
    catalog_changed()


@admin.register(StoreApp)
class StoreAppAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "creator", "kind", "visibility", "is_listed", "is_featured", "published_at"]
    list_filter = ["kind", "visibility", "is_listed", "is_featured", "is_builtin"]
    search_fields = ["name", "slug", "creator__username"]
    actions = [unlist, relist]
    readonly_fields = ["link_token", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        link_token_sync(obj)  # a visibility changed here follows the same rule as in the builder
        super().save_model(request, obj, form, change)


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["app", "reason", "user", "resolved", "created_at"]
    list_filter = ["resolved", "reason"]
    list_editable = ["resolved"]
    search_fields = ["app__name", "details"]


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["app", "user", "rating", "updated_at"]


@admin.register(AppVersion)
class AppVersionAdmin(admin.ModelAdmin):
    list_display = ["app", "number", "created_by", "created_at"]
    readonly_fields = ["app", "number", "settings", "created_by", "created_at"]
