from django.contrib import admin

from access.admin import AuditedAdmin

from artifacts.models import ArtifactFile, DownloadEvent, Release, ReleaseDocument, Variant


class ReleaseDocumentInline(admin.StackedInline):
    model = ReleaseDocument
    extra = 0


@admin.register(Release)
class ReleaseAdmin(AuditedAdmin, admin.ModelAdmin):
    """The approval policy decides automatic approval: changes are audited, releases are not deleted here."""

    list_display = ["slug", "name", "family", "parameter_count", "licence", "approval_policy", "is_listed"]
    list_filter = ["approval_policy", "is_listed", "family"]
    search_fields = ["slug", "name"]
    inlines = [ReleaseDocumentInline]


@admin.register(Variant)
class VariantAdmin(admin.ModelAdmin):
    """Variants come only from ``register_release``; where their files are read from never changes here."""

    list_display = ["release", "name", "location", "registered_at"]
    list_filter = ["release"]
    readonly_fields = ["location"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ArtifactFile)
class ArtifactFileAdmin(admin.ModelAdmin):
    list_display = ["path", "variant", "size", "integrity", "verified_at"]
    list_filter = ["integrity", "variant__release"]
    search_fields = ["path", "sha256", "md5"]
    readonly_fields = ["storage_key", "size", "sha256", "md5", "integrity", "integrity_detail", "verified_at"]

    def has_add_permission(self, request) -> bool:
        """Files come only from ``register_release``, which hashes them where they are stored."""
        return False


@admin.register(DownloadEvent)
class DownloadEventAdmin(admin.ModelAdmin):
    list_display = ["at", "user", "file", "outcome", "counts_as_download", "ip", "range_header"]
    list_filter = ["outcome", "counts_as_download"]
    search_fields = ["user__email", "file__path", "ip"]
    list_select_related = ["user", "file"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
