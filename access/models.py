"""People who use the portal, the licences they accept and the grants they hold."""

import hashlib

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


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

    def __str__(self) -> str:
        return self.email


class Licence(models.Model):
    """A licence (e.g. the OPT-175B non-commercial licence); its text lives in versions."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.title

    def current_version(self) -> "LicenceVersion | None":
        return self.versions.filter(published_at__isnull=False).order_by("-number").first()


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
    revoke_reason = models.TextField(blank=True)
    generation = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["user", "release"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.release}"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now
