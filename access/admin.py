from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from access.models import (
    ApiToken, Application, ApplicationNote, AuditEvent, Grant, Institution, Licence, LicenceAcceptance,
    LicenceVersion, ReasonTemplate, User, VettingSignal,
)
from access.services.licences import licence_version_publish


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that change only through services (audited): no adding, changing or deleting here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Personal info", {"fields": ["first_name", "last_name"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Important dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


@admin.register(Institution)
class InstitutionAdmin(admin.ModelAdmin):
    list_display = ["name", "sector", "ror_id"]
    search_fields = ["name", "ror_id"]
    list_filter = ["sector"]


class LicenceVersionInline(admin.StackedInline):
    """Published texts are immutable; a new text is published as the next version (audited)."""

    model = LicenceVersion
    extra = 0
    fields = ["number", "text_markdown", "sha256", "published_at"]
    readonly_fields = ["number", "sha256", "published_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Licence)
class LicenceAdmin(admin.ModelAdmin):
    list_display = ["title", "slug"]
    inlines = [LicenceVersionInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is not LicenceVersion:
            return super().save_formset(request, form, formset, change)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for version_form in formset.forms:
            if version_form.instance.pk is None and version_form.has_changed():
                formset.new_objects.append(licence_version_publish(
                    licence=form.instance, by=request.user, text_markdown=version_form.cleaned_data["text_markdown"]))
        return formset.new_objects


@admin.register(LicenceAcceptance)
class LicenceAcceptanceAdmin(admin.ModelAdmin):
    list_display = ["user", "licence_version", "signature_name", "accepted_at", "ip_address"]
    readonly_fields = [field.name for field in LicenceAcceptance._meta.fields]
    list_select_related = ["user", "licence_version__licence"]

    def has_add_permission(self, request) -> bool:
        return False


class SignalInline(admin.TabularInline):
    model = VettingSignal
    extra = 0
    can_delete = False
    readonly_fields = ["code", "level", "blocking", "explanation", "checked_at"]


class NoteInline(admin.TabularInline):
    """Notes are added on the review page, where they are audited."""

    model = ApplicationNote
    extra = 0
    can_delete = False
    readonly_fields = ["author", "text", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    """Read-mostly: decisions go through the review queue so they are audited and e-mailed."""

    list_display = ["id", "legal_name", "user", "release", "status", "vetting", "country", "submitted_at"]
    list_filter = ["status", "vetting", "release", "role", "sector"]
    search_fields = ["legal_name", "user__email", "orcid", "institution__name"]
    list_select_related = ["user", "release"]
    inlines = [SignalInline, NoteInline]
    readonly_fields = [field.name for field in Application._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    list_display = ["user", "release", "granted_at", "expires_at", "revoked_at", "generation"]
    list_filter = ["release"]
    search_fields = ["user__email"]
    list_select_related = ["user", "release"]
    readonly_fields = [field.name for field in Grant._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ReasonTemplate)
class ReasonTemplateAdmin(admin.ModelAdmin):
    list_display = ["title", "kind"]
    list_filter = ["kind"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Append-only: no adding, changing or deleting here (the database refuses it too)."""

    list_display = ["id", "created_at", "actor", "action", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["target_id", "actor__email", "reason"]
    list_select_related = ["actor"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "scopes", "created_at", "expires_at", "revoked_at"]
    readonly_fields = [field.name for field in ApiToken._meta.fields]  # scopes included: set only at creation

    def has_add_permission(self, request) -> bool:
        return False
