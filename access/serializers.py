"""DRF serializers of the access API: input parsing and output shapes only."""

from django.conf import settings
from django.utils import timezone
from django_countries import countries
from django_countries.serializer_fields import CountryField
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from access.models import (
    ANSWER_MAX_CHARS, INTENDED_USE_MAX_CHARS, PUBLICATIONS_MAX_CHARS, REASON_MAX_CHARS, Application, Grant,
    Institution, VettingSignal,
)
from access.selectors import queue_position, sla_state
from access.services.figures import expected_wait


class ApplicationInputSerializer(serializers.Serializer):
    releases = serializers.ListField(child=serializers.SlugField(), allow_empty=False, min_length=1,
                                     help_text="Slugs of the releases requested; one application each.")
    legal_name = serializers.CharField(min_length=1, max_length=200)
    institution_name = serializers.CharField(min_length=1, max_length=300)
    institution_ror_id = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=Application.Role.choices)
    sector = serializers.ChoiceField(choices=Institution.Sector.choices, required=False,
                                     default=Institution.Sector.ACADEMIA)
    country = serializers.ChoiceField(choices=[(code, name) for code, name in countries],
                                      help_text="ISO 3166-1 alpha-2 code, e.g. GB")
    orcid = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    publications = serializers.CharField(max_length=PUBLICATIONS_MAX_CHARS, required=False, allow_blank=True,
                                         default="")
    intended_use = serializers.CharField(max_length=INTENDED_USE_MAX_CHARS)  # and at least the configured minimum
    supervisor_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    supervisor_email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")
    draft = serializers.BooleanField(required=False, default=False,
                                     help_text="Save as a draft instead of submitting.")
    accept_licence = serializers.BooleanField(required=False, default=False,
                                              help_text="Required to submit: you accept each release's licence.")
    signature_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                           help_text="Your full legal name, typed as your signature.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["intended_use"] = serializers.CharField(
            min_length=settings.ACCESS_INTENDED_USE_MIN_CHARS, max_length=INTENDED_USE_MAX_CHARS,
            help_text="Your research question, what you will do with the weights, and how you will publish.")


class SubmitInputSerializer(serializers.Serializer):
    accept_licence = serializers.BooleanField()
    signature_name = serializers.CharField(min_length=1, max_length=200)


class RespondInputSerializer(serializers.Serializer):
    response = serializers.CharField(min_length=1, max_length=ANSWER_MAX_CHARS,
                                     help_text="Your answer to the reviewer's request for information.")


class ReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=REASON_MAX_CHARS, required=False, allow_blank=True, default="",
                                   help_text="Shown to the applicant; required to reject or request information.")


class ApplicationSerializer(serializers.ModelSerializer):
    release = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    institution = serializers.CharField(source="institution.name", read_only=True)
    country = CountryField()
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    supervisor_email = serializers.EmailField(read_only=True, allow_blank=True)  # the schema: an address or ""

    class Meta:
        model = Application
        fields = ["id", "release", "status", "status_display", "legal_name", "institution", "role", "sector",
                  "country", "orcid", "publications", "intended_use", "supervisor_name", "supervisor_email",
                  "reference_status", "info_request", "info_response", "decision_reason", "previous_application",
                  "created_at", "submitted_at", "decided_at"]
        read_only_fields = fields


class ApplicationDetailSerializer(ApplicationSerializer):
    """One application with where it stands: its queue position and the expected wait."""

    queue_position = serializers.SerializerMethodField()
    expected_wait_hours = serializers.SerializerMethodField(
        help_text="Median time to a decision over the last 30 days, in hours (null without decisions).")

    class Meta(ApplicationSerializer.Meta):
        fields = ApplicationSerializer.Meta.fields + ["queue_position", "expected_wait_hours"]
        read_only_fields = fields

    def get_queue_position(self, application) -> int | None:
        return queue_position(application=application)

    def get_expected_wait_hours(self, application) -> float | None:
        if application.status not in Application.PENDING_STATUSES:
            return None
        wait = expected_wait(release=application.release)
        return round(wait.total_seconds() / 3600, 1) if wait is not None else None


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = VettingSignal
        fields = ["code", "level", "blocking", "explanation", "checked_at"]


class ReviewApplicationSerializer(ApplicationSerializer):
    applicant_email = serializers.EmailField(source="user.email", read_only=True)
    assigned_to = serializers.EmailField(source="assigned_to.email", read_only=True, default=None, allow_null=True)
    signals = serializers.SerializerMethodField()
    age_working_days = serializers.SerializerMethodField()
    sla = serializers.SerializerMethodField(help_text="ok, due_soon or overdue")

    class Meta(ApplicationSerializer.Meta):
        fields = ApplicationSerializer.Meta.fields + ["applicant_email", "vetting", "signals", "assigned_to",
                                                      "age_working_days", "sla"]
        read_only_fields = fields

    def _sla(self, application):
        if not hasattr(application, "_sla_state"):
            application._sla_state = sla_state(application, self.context.get("now") or timezone.now())
        return application._sla_state

    @extend_schema_field(SignalSerializer(many=True))
    def get_signals(self, application) -> list[dict]:
        # Plain dicts: 50 rows x 7 signals through a nested ModelSerializer cost more than the query.
        return [{"code": signal.code, "level": signal.level, "blocking": signal.blocking,
                 "explanation": signal.explanation, "checked_at": signal.checked_at.isoformat()}
                for signal in application.signals.all()]

    def get_age_working_days(self, application) -> int:
        return self._sla(application).working_days

    def get_sla(self, application) -> str:
        return self._sla(application).state


class GrantSerializer(serializers.ModelSerializer):
    release = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    licence_version = serializers.SerializerMethodField()
    active = serializers.SerializerMethodField()

    class Meta:
        model = Grant
        fields = ["id", "release", "licence_version", "application", "granted_at", "expires_at", "revoked_at",
                  "revoke_reason", "active"]
        read_only_fields = fields

    def get_licence_version(self, grant) -> str:
        return f"{grant.licence_version.licence.slug} v{grant.licence_version.number}"

    def get_active(self, grant) -> bool:
        return grant.is_active()


class ReviewApplicationPageSerializer(serializers.Serializer):
    """One page of the review queue (keyset pages, ``portal.keyset``: no count, which would cost a
    scan of every matching application)."""

    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null on the first.")
    results = ReviewApplicationSerializer(many=True)


def review_page_size() -> int:
    return settings.ACCESS_REVIEW_PAGE_SIZE
