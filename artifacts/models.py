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
