"""Playground jobs, per-user limits and flagged outputs (the web side; no torch here)."""

import uuid

from django.db import models
from django.utils import timezone


class PromptJob(models.Model):
    """One request to the model, from the page or the API: what was asked, what came back, and when.

    ``attempt`` numbers the deliveries to workers: a worker drops a message whose attempt is not the
    job's current one, so a message redelivered by the broker after a retry runs nothing.
    ``tokens_charged`` counts against the daily quota: the reservation while the job waits or runs,
    the tokens actually used once it ends. The texts (prompts and outputs) are deleted after the
    retention period; the counts stay.
    """

    class Source(models.TextChoices):
        PAGE = "page", "Playground page"
        API = "api", "API"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Finished"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    OPEN_STATUSES = frozenset({Status.QUEUED, Status.RUNNING})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="prompt_jobs")
    grant = models.ForeignKey("access.Grant", on_delete=models.PROTECT, related_name="prompt_jobs")
    licence_version = models.ForeignKey("access.LicenceVersion", on_delete=models.PROTECT, related_name="+")
    release = models.ForeignKey("artifacts.Release", on_delete=models.PROTECT, related_name="prompt_jobs")
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)

    params = models.JSONField(help_text="Sampling parameters as the engine takes them, the seed included.")
    seed = models.BigIntegerField()
    prompts = models.JSONField(help_text="The prompts as sent: texts or token-id lists.")
    prompt_ids = models.JSONField(help_text="The token ids run for each prompt.")
    outputs = models.JSONField(default=list, blank=True, help_text="One entry per choice.")
    client_user = models.CharField(max_length=256, blank=True, help_text="The API's `user` field.")

    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_charged = models.PositiveIntegerField(default=0)

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    worker = models.CharField(max_length=200, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    texts_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [
            models.Index(fields=["user", "-queued_at"]),
            models.Index(fields=["release", "status", "queued_at"]),
            models.Index(fields=["status", "worker"]),
            models.Index(fields=["finished_at"]),
        ]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.release_id}, {self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def completion_id(self) -> str:
        return f"cmpl-{self.id.hex}"


class PlaygroundLimit(models.Model):
    """Staff's per-user overrides of the playground limits (empty: the site default)."""

    user = models.OneToOneField("access.User", on_delete=models.CASCADE, related_name="playground_limit")
    max_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_sequences = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    daily_tokens = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey("access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    def __str__(self) -> str:
        return f"Playground limits of {self.user}"


class OutputFlag(models.Model):
    """A researcher's report that an output is harmful or wrong, for the staff moderation queue."""

    class Category(models.TextChoices):
        HARMFUL = "harmful", "Harmful or dangerous content"
        HATE = "hate", "Hate, harassment or bias"
        SEXUAL = "sexual", "Sexual content"
        PRIVACY = "privacy", "Personal data or privacy"
        MISINFORMATION = "misinformation", "False or misleading information"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Dismissed"
        NOTED = "noted", "Noted"

    job = models.ForeignKey(PromptJob, on_delete=models.PROTECT, related_name="flags")
    flagged_by = models.ForeignKey("access.User", on_delete=models.PROTECT, related_name="output_flags")
    choice_index = models.PositiveSmallIntegerField(default=0)
    category = models.CharField(max_length=20, choices=Category.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    staff_note = models.TextField(blank=True)
    resolved_by = models.ForeignKey("access.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"])]

    def __str__(self) -> str:
        return f"Flag {self.pk} on {self.job_id} ({self.category}, {self.status})"
