"""Releases of model weights."""

from django.db import models


class Release(models.Model):
    """A model release such as ``opt-175b``, gated by one licence."""

    class ApprovalPolicy(models.TextChoices):
        AUTOMATIC = "automatic", "Automatic approval when every vetting signal is green"
        MANUAL = "manual", "Manual review by staff"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    family = models.CharField(max_length=100, default="OPT")
    version = models.CharField(max_length=50, default="1.0")
    parameter_count = models.BigIntegerField(null=True, blank=True)
    summary = models.TextField(blank=True)
    licence = models.ForeignKey("access.Licence", on_delete=models.PROTECT, related_name="releases")
    approval_policy = models.CharField(max_length=20, choices=ApprovalPolicy.choices, default=ApprovalPolicy.MANUAL)
    is_listed = models.BooleanField(default=True, help_text="Shown on the public releases page.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family", "parameter_count", "slug"]

    def __str__(self) -> str:
        return self.name


class ReleaseDocument(models.Model):
    """A Markdown document registered with a release (model card, data card, logbook...)."""

    class Kind(models.TextChoices):
        MODEL_CARD = "model_card", "Model card"
        DATA_CARD = "data_card", "Data card"
        LOGBOOK = "logbook", "Training logbook"
        PAPER = "paper", "Paper"
        OTHER = "other", "Other"

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="documents")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    title = models.CharField(max_length=200)
    body_markdown = models.TextField(blank=True)
    url = models.URLField(blank=True, help_text="For papers and external documents.")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.release.slug}: {self.title}"


class Variant(models.Model):
    """One packaging of a release's weights, e.g. ``metaseq-mp8`` or ``hf-safetensors``."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="variants")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    location = models.CharField(
        max_length=500, help_text="Where the files are stored: s3://bucket/prefix or an absolute local directory."
    )
    registered_at = models.DateTimeField(auto_now_add=True)
    content_commit = models.CharField(
        max_length=40, blank=True,
        help_text="The Hub endpoint's commit id for the registered files; emptied when they change, computed again "
                  "on the next request (artifacts.hub).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "name"], name="artifacts_variant_unique")]
        ordering = ["release", "name"]

    def __str__(self) -> str:
        return f"{self.release.slug}/{self.name}"


class ArtifactFile(models.Model):
    """One file of a variant, with the checksums computed from the stored bytes."""

    class Integrity(models.TextChoices):
        PENDING = "pending", "Not hashed yet"
        OK = "ok", "Verified"
        MD5_MISMATCH = "md5_mismatch", "Does not match the published md5"
        CORRUPTED = "corrupted", "Stored bytes changed since registration"
        MISSING = "missing", "Missing from storage"

    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=500, help_text="Relative path inside the variant.")
    storage_key = models.CharField(max_length=1000)
    size = models.BigIntegerField(null=True)
    sha256 = models.CharField(max_length=64, blank=True)
    md5 = models.CharField(max_length=32, blank=True)
    expected_md5 = models.CharField(max_length=32, blank=True, help_text="From a published md5 list, if given.")
    integrity = models.CharField(max_length=20, choices=Integrity.choices, default=Integrity.PENDING)
    integrity_detail = models.TextField(blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["variant", "path"], name="artifacts_file_unique")]
        ordering = ["variant", "path"]

    def __str__(self) -> str:
        return f"{self.variant}/{self.path}"

    @property
    def is_downloadable(self) -> bool:
        return self.integrity == self.Integrity.OK


class DownloadEvent(models.Model):
    """Every use of a download link, successful or not."""

    class Outcome(models.TextChoices):
        REDIRECTED = "redirected", "Redirected to storage"
        STREAMED = "streamed", "Streamed by the portal"
        EXPIRED = "expired", "Link expired"
        INVALID = "invalid", "Link invalid or tampered with"
        REVOKED = "revoked", "Access revoked, expired or renewed"
        OVER_LIMIT = "over_limit", "Download limit reached"
        WITHHELD = "withheld", "File withheld (integrity)"
        LICENCE_REQUIRED = "licence_required", "Licence must be accepted first"
        STORAGE_ERROR = "storage_error", "Storage unavailable"

    user = models.ForeignKey("access.User", on_delete=models.PROTECT, null=True, related_name="download_events")
    grant = models.ForeignKey("access.Grant", on_delete=models.PROTECT, null=True, related_name="download_events")
    file = models.ForeignKey(ArtifactFile, on_delete=models.PROTECT, null=True, related_name="download_events")
    link_id = models.CharField(max_length=32, blank=True, help_text="The issued link; retries share it.")
    counts_as_download = models.BooleanField(default=False)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=500, blank=True)
    range_header = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)

    class Meta:
        ordering = ["-at"]
        indexes = [
            # The limit check reads only counted downloads; retries and refusals stay out of it.
            models.Index(fields=["user", "file", "at"], condition=models.Q(counts_as_download=True),
                         name="artifacts_counted_download"),
        ]
