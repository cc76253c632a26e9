"""People who use the portal, the licences they accept and the grants they hold."""

import hashlib

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django_countries.fields import CountryField

#: The longest free text accepted from a person, in characters; forms, the API and its schema say so.
INTENDED_USE_MAX_CHARS = 5000
PUBLICATIONS_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 5000  # an applicant's answer to a request for information
REASON_MAX_CHARS = 5000  # a reviewer's reason or internal note


class UserManager(BaseUserManager):
    """Users are identified by e-mail address; there is no username."""

    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra_fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email: str, password: str | None = None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        if not extra_fields["is_staff"] or not extra_fields["is_superuser"]:
            raise ValueError("A superuser must have is_staff=True and is_superuser=True.")
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    username = None
    email = models.EmailField("e-mail address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="access_user_email_ci_unique")]
        # Staff are a handful among a million applicants: finding them (reviewers, digests) reads this.
        indexes = [models.Index(fields=["email"], name="access_user_staff", condition=models.Q(is_staff=True))]

    def __str__(self) -> str:
        return self.email


class Licence(models.Model):
    """A licence (e.g. the OPT-175B non-commercial licence); its text lives in versions."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.title

    def published_versions(self) -> "models.QuerySet[LicenceVersion]":
        """Newest first: the first is the version in force."""
        return self.versions.filter(published_at__isnull=False).order_by("-number")

    def current_version(self) -> "LicenceVersion | None":
        return self.published_versions().first()


class LicenceVersion(models.Model):
    """One immutable text of a licence, identified by its sha256."""

    licence = models.ForeignKey(Licence, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    text_markdown = models.TextField()
    sha256 = models.CharField(max_length=64, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["licence", "number"], name="access_licence_version_unique")]
        ordering = ["licence", "-number"]

    def __str__(self) -> str:
        return f"{self.licence.title} v{self.number}"

    def save(self, *args, **kwargs):
        self.sha256 = hashlib.sha256(self.text_markdown.encode("utf-8")).hexdigest()
        super().save(*args, **kwargs)


class Grant(models.Model):
    """Access to one release for one user, created by an approval.

    ``generation`` is bumped on revocation and renewal: download links carry it, so bumping
    it invalidates every link issued before.
    """

    user = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="grants")
    release = models.ForeignKey("artifacts.Release", on_delete=models.PROTECT, related_name="grants")
    licence_version = models.ForeignKey(LicenceVersion, on_delete=models.PROTECT, related_name="grants")
    granted_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        "access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="grants_revoked"
    )
    revoke_reason = models.TextField(max_length=REASON_MAX_CHARS, blank=True)
    generation = models.PositiveIntegerField(default=1)
    application = models.ForeignKey(
        "access.Application", on_delete=models.PROTECT, null=True, blank=True, related_name="grants"
    )
    reminded_days_before = models.PositiveIntegerField(
        null=True, blank=True, help_text="The nearest expiry reminder sent (e.g. 7 after the 30- and 7-day ones)."
    )
    expiry_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["user", "release"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.release}"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now


class LicenceAcceptance(models.Model):
    """A signature: this user accepted exactly this licence text (by sha256), when, from where."""

    user = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="licence_acceptances")
    licence_version = models.ForeignKey(LicenceVersion, on_delete=models.PROTECT, related_name="acceptances")
    signature_name = models.CharField("full legal name typed as signature", max_length=200)
    text_sha256 = models.CharField(max_length=64)
    accepted_at = models.DateTimeField(default=timezone.now)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-accepted_at"]
        indexes = [models.Index(fields=["user", "licence_version"])]

    def __str__(self) -> str:
        return f"{self.user} accepted {self.licence_version}"


class Institution(models.Model):
    """A research organisation; its e-mail domains back the domain vetting signal."""

    class Sector(models.TextChoices):
        ACADEMIA = "academia", "Academia"
        GOVERNMENT = "government", "Government"
        NONPROFIT = "nonprofit", "Non-profit / civil society"
        INDUSTRY = "industry", "Industry research lab"
        OTHER = "other", "Other"

    name = models.CharField(max_length=300, unique=True)
    ror_id = models.CharField("ROR id", max_length=100, blank=True, help_text="e.g. https://ror.org/02mhbdp94")
    email_domains = models.JSONField(default=list, blank=True, help_text='e.g. ["cam.ac.uk", "cl.cam.ac.uk"]')
    sector = models.CharField(max_length=20, choices=Sector.choices, default=Sector.ACADEMIA)
    confirmed = models.BooleanField(
        default=False, help_text="Checked by staff: suggested to every applicant. A name an applicant typed is not "
                                 "confirmed and is suggested only to the people who used it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Application(models.Model):
    """One request for access to one release, and the researcher profile it was made with."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        IN_REVIEW = "in_review", "In review"
        NEEDS_INFO = "needs_info", "Information requested"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    class Role(models.TextChoices):
        FACULTY = "faculty", "Faculty / principal investigator"
        RESEARCHER = "researcher", "Researcher / research scientist"
        POSTDOC = "postdoc", "Postdoctoral researcher"
        PHD_STUDENT = "phd_student", "PhD student"
        MASTERS_STUDENT = "masters_student", "Master's student"
        UNDERGRADUATE = "undergraduate", "Undergraduate student"
        ENGINEER = "engineer", "Research engineer"
        OTHER = "other", "Other"

    STUDENT_ROLES = frozenset({Role.PHD_STUDENT, Role.MASTERS_STUDENT, Role.UNDERGRADUATE})
    PENDING_STATUSES = frozenset({Status.SUBMITTED, Status.IN_REVIEW})
    OPEN_STATUSES = frozenset({Status.DRAFT, Status.SUBMITTED, Status.IN_REVIEW, Status.NEEDS_INFO})
    DECIDED_STATUSES = frozenset({Status.APPROVED, Status.REJECTED})

    class Reference(models.TextChoices):
        NOT_REQUIRED = "not_required", "Not required"
        PENDING = "pending", "Waiting for the reference"
        CONFIRMED = "confirmed", "Confirmed by the reference"
        DECLINED = "declined", "Declined by the reference"

    class Vetting(models.TextChoices):
        PENDING = "pending", "Checks running"
        GREEN = "green", "All checks green"
        ATTENTION = "attention", "Needs a reviewer's attention"
        BLOCKED = "blocked", "Blocked (cannot be approved)"

    user = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="applications")
    release = models.ForeignKey("artifacts.Release", on_delete=models.PROTECT, related_name="applications")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)

    legal_name = models.CharField(max_length=200)
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="applications")
    role = models.CharField(max_length=30, choices=Role.choices)
    sector = models.CharField(max_length=20, choices=Institution.Sector.choices, default=Institution.Sector.ACADEMIA)
    country = CountryField()
    orcid = models.CharField("ORCID iD", max_length=19, blank=True)
    publications = models.TextField("publications and URLs", max_length=PUBLICATIONS_MAX_CHARS, blank=True)
    intended_use = models.TextField("intended research use", max_length=INTENDED_USE_MAX_CHARS)
    supervisor_name = models.CharField("supervisor / reference name", max_length=200, blank=True)
    supervisor_email = models.EmailField("supervisor / reference e-mail", blank=True)

    licence_acceptance = models.ForeignKey(
        LicenceAcceptance, on_delete=models.PROTECT, null=True, blank=True, related_name="applications"
    )
    previous_application = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reapplications"
    )
    reference_status = models.CharField(max_length=20, choices=Reference.choices, default=Reference.NOT_REQUIRED)
    reference_responded_at = models.DateTimeField(null=True, blank=True)
    vetting = models.CharField(max_length=20, choices=Vetting.choices, default=Vetting.PENDING)
    assigned_to = models.ForeignKey(
        "access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="assigned_applications"
    )
    info_request = models.TextField(max_length=REASON_MAX_CHARS, blank=True,
                                    help_text="The latest request for information, shown to the applicant.")
    info_response = models.TextField(max_length=ANSWER_MAX_CHARS, blank=True)
    decision_reason = models.TextField(max_length=REASON_MAX_CHARS, blank=True, help_text="Shown to the applicant.")
    decided_by = models.ForeignKey(
        "access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="decided_applications"
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True, help_text="First submission: age and SLA count from here.")
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("review_application", "Can review licence applications")]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "release"], name="access_one_open_application_per_release",
                condition=models.Q(status__in=["draft", "submitted", "in_review", "needs_info"]),
            ),
        ]
        indexes = [
            models.Index(fields=["status", "submitted_at"]),
            models.Index(fields=["release", "status", "submitted_at"]),
            models.Index(fields=["user", "release"]),
            models.Index(fields=["decided_at"]),
            # The review queue's keyset pages (portal.keyset), oldest first, at any depth.
            models.Index(fields=["submitted_at", "id"], name="access_app_pending_order",
                         condition=models.Q(status__in=["submitted", "in_review"])),
            models.Index(fields=["submitted_at", "id"], name="access_app_decided_order",
                         condition=models.Q(status__in=["approved", "rejected", "withdrawn"])),
            # ... and filtered by country, however few applications a country has.
            models.Index(fields=["country", "submitted_at", "id"], name="access_app_pending_country",
                         condition=models.Q(status__in=["submitted", "in_review"])),
            models.Index(fields=["country", "submitted_at", "id"], name="access_app_decided_country",
                         condition=models.Q(status__in=["approved", "rejected", "withdrawn"])),
        ]

    def __str__(self) -> str:
        return f"Application #{self.pk} ({self.release_id}, {self.status})"

    @property
    def is_student(self) -> bool:
        return self.role in self.STUDENT_ROLES


class VettingSignal(models.Model):
    """One automated check on an application, with the explanation reviewers see."""

    class Level(models.TextChoices):
        GREEN = "green", "OK"
        AMBER = "amber", "Check"
        RED = "red", "Problem"

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="signals")
    code = models.CharField(max_length=40)
    level = models.CharField(max_length=10, choices=Level.choices)
    blocking = models.BooleanField(default=False, help_text="The application cannot be approved while this holds.")
    explanation = models.TextField()
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["application", "code"], name="access_signal_unique")]
        indexes = [
            models.Index(fields=["code", "level"]),
            # The queue's signal filter: the few applications with a given signal that is not green.
            models.Index(fields=["code", "application"], name="access_signal_attention",
                         condition=~models.Q(level="green")),
        ]

    def __str__(self) -> str:
        return f"{self.code}: {self.level}"


class ApplicationNote(models.Model):
    """An internal reviewer note; never shown to the applicant."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="+")
    text = models.TextField(max_length=REASON_MAX_CHARS)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]


class ReasonTemplate(models.Model):
    """A reusable reason for a rejection or an information request; reviewers add their own text."""

    class Kind(models.TextChoices):
        REJECT = "reject", "Rejection"
        REQUEST_INFO = "request_info", "Information request"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    title = models.CharField(max_length=100)
    text = models.TextField()

    class Meta:
        ordering = ["kind", "title"]
        constraints = [models.UniqueConstraint(fields=["kind", "title"], name="access_reason_template_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"


class AuditEvent(models.Model):
    """An append-only, hash-chained record of every state change.

    PostgreSQL refuses UPDATE and DELETE on this table (a trigger, migration 0005);
    ``row_hash`` covers the row and the previous row's hash, so ``verify_audit`` finds edits
    made with the trigger disabled, and deletions in the middle of the chain.
    """

    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey("access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=40)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    row_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target_type}#{self.target_id}"


class AuditCheckpoint(models.Model):
    """The chain's head, signed with a key derived from SECRET_KEY: one row, renewed by each audit row.

    The hash chain alone cannot show that its newest rows were deleted; this row names the head
    (id, hash and time) under a signature nobody can renew without SECRET_KEY, so ``verify_audit``
    notices a head that is gone, changed, or followed by rows ``audit_record`` did not write.
    """

    event_id = models.PositiveBigIntegerField()
    event_hash = models.CharField(max_length=64)
    event_created_at = models.DateTimeField()
    signature = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"audit head #{self.event_id}"


class ApiToken(models.Model):
    """A personal API token; only its sha256 is stored, the token is shown once.

    Its ``scopes`` restrict what it may call: a token made for a script's inference cannot download
    weights or approve applications. Sessions have no scopes.
    """

    class Scope(models.TextChoices):
        DOWNLOAD = "download", "Download: release manifests and download scripts for your grants"
        INFERENCE = "inference", "Inference: the playground API"
        REVIEW = "review", "Review: the review queue and decisions (staff, after confirming your two-factor code)"

    user = models.ForeignKey("access.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise the token.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_with_mfa = models.BooleanField(
        default=False, help_text="Created in a session with a confirmed second factor: may hold the review scope."
    )
    scopes = models.JSONField(default=list, help_text='What the token may call, e.g. ["download", "inference"].')

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now
