from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import transaction
from django.db.models import Model, QuerySet
from django.forms.models import model_to_dict

from access.audit import audit_record
from access.http import client_ip
from access.models import (
    ApiToken, Application, ApplicationNote, AuditEvent, Grant, Institution, Licence, LicenceAcceptance,
    LicenceVersion, ReasonTemplate, User, VettingSignal,
)
from access.services.institutions import institution_confirm
from access.services.licences import licence_version_publish
from access.services.tokens import api_tokens_revoke_all


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that change only through services (audited): no adding, changing or deleting here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _audit_value(name: str, value):
    """A form or model value as an audit row keeps it: ids for records, never a password hash."""
    if "password" in name:
        return "(changed)"
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, QuerySet | list | tuple | set):
        return [_audit_value(name, item) for item in value]
    return value


class AuditedAdmin:
    """A ModelAdmin mixin for records that decide access: every admin change writes an audit row.

    The row (``<model>.admin_create``/``admin_change``/``admin_delete``) has the changed fields
    before and after, the admin and their address, in the transaction that saves the change.
    Deleting is not offered unless ``deletable`` is set, and then it is audited too.
    """

    deletable = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)

    def save_related(self, request, form, formsets, change) -> None:
        """After the record and its many-to-many fields are saved (inside the admin's transaction)."""
        super().save_related(request, form, formsets, change)
        after = {name: _audit_value(name, form.cleaned_data[name])
                 for name in form.changed_data if name in form.cleaned_data}
        if change:
            before = {name: _audit_value(name, form.initial.get(name)) for name in after}
            after = {name: value for name, value in after.items() if value != before[name]}
            before = {name: before[name] for name in after}
            if not after:
                return
        else:
            before = {}
        with transaction.atomic():
            audit_record(actor=request.user, action=self._audit_action("admin_change" if change else "admin_create"),
                         target=form.instance, before=before, after=after, ip_address=client_ip(request))

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            self._audit_deletion(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                self._audit_deletion(request, obj)
            super().delete_queryset(request, queryset)

    def _audit_deletion(self, request, obj) -> None:
        before = {name: _audit_value(name, value) for name, value in model_to_dict(obj).items()}
        audit_record(actor=request.user, action=self._audit_action("admin_delete"), target=obj, before=before,
                     ip_address=client_ip(request))

    def _audit_action(self, verb: str) -> str:
        return f"{self.model._meta.model_name}.{verb}"


@admin.register(User)
class UserAdmin(AuditedAdmin, DjangoUserAdmin):
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

    def user_change_password(self, request, id, form_url=""):
        """Setting a password here revokes the user's API tokens, as a change or reset by the user does."""
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:  # the new password was saved
                api_tokens_revoke_all(user=User.objects.get(pk=id), by=request.user,
                                      reason="Staff set a new password in the admin.", ip_address=client_ip(request))
        return response


@admin.register(Institution)
class InstitutionAdmin(AuditedAdmin, admin.ModelAdmin):
    """E-mail domains back the domain vetting signal: edits are audited; one in use cannot be deleted."""

    deletable = True
    list_display = ["name", "sector", "ror_id", "confirmed"]
    search_fields = ["name", "ror_id"]
    list_filter = ["confirmed", "sector"]
    actions = ["confirm"]

    def get_changeform_initial_data(self, request) -> dict:
        return {**super().get_changeform_initial_data(request), "confirmed": True}  # staff adding one vouch for it

    @admin.action(description="Confirm: suggest to every applicant", permissions=["change"])
    def confirm(self, request, queryset) -> None:
        for institution in queryset:
            institution_confirm(institution=institution, by=request.user)
        self.message_user(request, f"Confirmed {queryset.count()} institution(s).")


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
class LicenceAdmin(AuditedAdmin, admin.ModelAdmin):
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
class LicenceAcceptanceAdmin(AuditedAdmin, admin.ModelAdmin):
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
class ApplicationAdmin(AuditedAdmin, admin.ModelAdmin):
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
class GrantAdmin(AuditedAdmin, admin.ModelAdmin):
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
class ApiTokenAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "scopes", "created_at", "expires_at", "revoked_at"]
    readonly_fields = [field.name for field in ApiToken._meta.fields]  # scopes included: set only at creation

    def has_add_permission(self, request) -> bool:
        return False
