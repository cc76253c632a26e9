"""Gatehouse settings, read from the environment once, here.

Every variable is documented in docs/configuration.md (a test keeps it complete). With nothing set, the
portal runs on embedded defaults: SQLite, local file storage, console e-mail and a
file-system Celery broker, all under ``var/``.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GATEHOUSE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}.")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None


def _development_secret_key() -> str:
    """A random key kept in var/ so sessions survive restarts; `check --deploy` rejects it."""
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


DEBUG = env_bool("DEBUG", False)
SECRET_KEY_FROM_ENVIRONMENT = bool(os.environ.get("SECRET_KEY"))
SECRET_KEY = os.environ.get("SECRET_KEY") or _development_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.environ.get("SITE_URL", "http://localhost:8000").rstrip("/")

# HTTPS=1 in production behind TLS: redirects, secure cookies and HSTS.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# Proxies in front of the portal whose X-Forwarded-For entries are trusted (access.http.client_ip).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1 if BEHIND_PROXY else 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured(f"TRUSTED_PROXY_COUNT must be 0 or more, got {TRUSTED_PROXY_COUNT}.")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_countries",
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "portal",
    "access",
    "artifacts",
    "inference_worker",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.SecurityHeadersMiddleware",
    "portal.middleware.RefuseNulCharactersMiddleware",  # before anything reads the session or the database
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "access.middleware.StaffMFARequiredMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'gatehouse.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# Under ASGI (uvicorn workers) persistent connections leak, one per thread: use psycopg's pool.
if env_bool("DATABASE_POOL", False) and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 8),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process, Celery and the GPU worker write at once: take the write lock at BEGIN (waiting
    # up to 20 s) instead of failing to upgrade a read lock; WAL lets readers run beside the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "access.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"

# django-allauth: e-mail is the identity, and nothing works before it is verified.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True  # in the browser that signed up; elsewhere: sign in
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Gatehouse] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if HTTPS else "http"
ACCOUNT_ADAPTER = "access.adapters.AccountAdapter"
ACCOUNT_FORMS = {"signup": "access.forms.SignupForm", "login": "access.forms.LoginForm"}
ACCOUNT_RATE_LIMITS = {
    "login_failed": os.environ.get("LOGIN_FAILED_RATE_LIMIT", "10/m/ip,5/5m/key"),
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_FORMS = {"activate_totp": "access.forms.ActivateTOTPForm"}
MFA_TOTP_ISSUER = os.environ.get("MFA_TOTP_ISSUER", "Gatehouse")
MFA_ADAPTER = "allauth.mfa.adapter.DefaultMFAAdapter"

# E-mail: console by default; set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend
# and the EMAIL_HOST* variables for SMTP.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Gatehouse <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Celery: Redis when configured, otherwise a broker kept in files under var/ (no server).
CELERY_FILESYSTEM_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
CELERY_RESULT_BACKEND = (
    os.environ.get("CELERY_RESULT_BACKEND") or REDIS_URL or f"file://{CELERY_FILESYSTEM_DIR / 'results'}"
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FILESYSTEM_DIR / "queue"),
        "data_folder_out": str(CELERY_FILESYSTEM_DIR / "queue"),
        "processed_folder": str(CELERY_FILESYSTEM_DIR / "processed"),
        "control_folder": str(CELERY_FILESYSTEM_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith("redis"):
    # A message not acknowledged in this time is delivered again (GPU tasks drop it by attempt number).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues by task name: web-side work on "default", model work on "gpu" (the GPU workers).
CELERY_TASK_ROUTES = {"access.*": {"queue": "default"}, "artifacts.*": {"queue": "default"}, "gpu.*": {"queue": "gpu"}}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 30 * 60)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Storage: local files (default) or S3-compatible object storage.
STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
if STORAGE_BACKEND not in {"local", "s3"}:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be 'local' or 's3', got {STORAGE_BACKEND!r}.")
STORAGE_LOCAL_ROOT = Path(os.environ.get("STORAGE_LOCAL_ROOT", VAR_DIR / "storage"))
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL", "")
S3_BUCKET = os.environ.get("S3_BUCKET", "gatehouse-weights")
S3_REGION = os.environ.get("S3_REGION", "us-east-1")
S3_ACCESS_KEY_ID = os.environ.get("S3_ACCESS_KEY_ID", "")
S3_SECRET_ACCESS_KEY = os.environ.get("S3_SECRET_ACCESS_KEY", "")

LANGUAGE_CODE = "en-gb"
# allauth's English in the portal's voice ("e-mail", sentence case): scripts/make-en-gb-messages.py
LOCALE_PATHS = [BASE_DIR / "portal" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": VAR_DIR / "media"}},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "access.schema.GatehouseAutoSchema",
    # JSON to browsers too (a manifest link opened in a tab), never DRF's developer page.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gatehouse API",
    "DESCRIPTION": "Licence applications, reviews, releases, downloads and the playground.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # the OpenAI-compatible API is async Django views, which drf-spectacular cannot see
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "inference_worker.openapi.add_openai_operations"],
}

# Licence applications and review (docs/access.md).
# Countries whose residents cannot be approved (ISO 3166 alpha-2). Default: the jurisdictions under
# comprehensive sanctions (Cuba, Iran, North Korea, Syria); extend it to what your counsel requires.
ACCESS_EMBARGOED_COUNTRIES = [code.upper() for code in env_list("ACCESS_EMBARGOED_COUNTRIES", "CU,IR,KP,SY")]
ACCESS_REAPPLY_COOLDOWN_DAYS = env_int("ACCESS_REAPPLY_COOLDOWN_DAYS", 30)
ACCESS_GRANT_DURATION_DAYS = env_int("ACCESS_GRANT_DURATION_DAYS", 365)
ACCESS_GRANT_REMINDER_DAYS = sorted((int(day) for day in env_list("ACCESS_GRANT_REMINDER_DAYS", "30,7")), reverse=True)
ACCESS_REVIEW_SLA_WORKING_DAYS = env_int("ACCESS_REVIEW_SLA_WORKING_DAYS", 5)
ACCESS_INTENDED_USE_MIN_CHARS = env_int("ACCESS_INTENDED_USE_MIN_CHARS", 200)
ACCESS_REFERENCE_LINK_DAYS = env_int("ACCESS_REFERENCE_LINK_DAYS", 30)
ACCESS_REFERENCE_EMAILS_PER_APPLICANT_PER_DAY = env_int("ACCESS_REFERENCE_EMAILS_PER_APPLICANT_PER_DAY", 5)
ACCESS_REFERENCE_EMAILS_PER_RECIPIENT_PER_DAY = env_int("ACCESS_REFERENCE_EMAILS_PER_RECIPIENT_PER_DAY", 3)
ACCESS_API_TOKEN_MAX_DAYS = env_int("ACCESS_API_TOKEN_MAX_DAYS", 365)
ACCESS_TRANSPARENCY_MIN_CELL = env_int("ACCESS_TRANSPARENCY_MIN_CELL", 5)
ACCESS_REVIEW_PAGE_SIZE = env_int("ACCESS_REVIEW_PAGE_SIZE", 50)
ACCESS_FIGURES_REFRESH_SECONDS = env_int("ACCESS_FIGURES_REFRESH_SECONDS", 300)

CELERY_BEAT_SCHEDULE = {
    "access-review-digest": {"task": "access.send_review_digest", "schedule": crontab(hour=7, minute=0)},
    "access-grant-expiry-reminders": {"task": "access.send_grant_expiry_reminders",
                                      "schedule": crontab(hour=8, minute=0)},
    "access-grant-expiry-notices": {"task": "access.notify_expired_grants", "schedule": crontab(minute=15)},
    "access-refresh-figures": {"task": "access.refresh_figures", "schedule": float(ACCESS_FIGURES_REFRESH_SECONDS)},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# Paths where staff must have completed two-factor authentication in this session.
STAFF_MFA_PATH_PREFIXES = ["/admin/", "/review/", "/api/v1/review/"]
# Accept the previous and next 30-second TOTP step too (clock drift on phones).
MFA_TOTP_TOLERANCE = 1

# Downloads (artifacts app).
DOWNLOAD_LINK_TTL_SECONDS = env_int("DOWNLOAD_LINK_TTL_SECONDS", 24 * 3600)
DOWNLOAD_PRESIGN_SECONDS = min(env_int("DOWNLOAD_PRESIGN_SECONDS", 300), 300)
DOWNLOAD_LIMIT_PER_FILE = env_int("DOWNLOAD_LIMIT_PER_FILE", 10)
DOWNLOAD_LIMIT_WINDOW_SECONDS = env_int("DOWNLOAD_LIMIT_WINDOW_SECONDS", 24 * 3600)
ARTIFACT_HASH_INLINE_MAX_FILES = env_int("ARTIFACT_HASH_INLINE_MAX_FILES", 16)
ARTIFACT_HASH_BATCH_FILES = env_int("ARTIFACT_HASH_BATCH_FILES", 8)
ARTIFACT_VERIFY_INTERVAL_HOURS = env_int("ARTIFACT_VERIFY_INTERVAL_HOURS", 24 * 7)
CLOUDFRONT_DOMAIN = os.environ.get("CLOUDFRONT_DOMAIN", "")
CLOUDFRONT_KEY_ID = os.environ.get("CLOUDFRONT_KEY_ID", "")
CLOUDFRONT_PRIVATE_KEY_PATH = os.environ.get("CLOUDFRONT_PRIVATE_KEY_PATH", "")
CELERY_BEAT_SCHEDULE["artifacts-verify-releases"] = {
    "task": "artifacts.verify_all_releases",
    "schedule": ARTIFACT_VERIFY_INTERVAL_HOURS * 3600,
}

# The playground and the completions API (inference_worker app; docs/playground.md).
# Redis carries the token streams, cancellations and worker heartbeats; without it the playground is closed.
PLAYGROUND_REDIS_URL = os.environ.get("PLAYGROUND_REDIS_URL") or REDIS_URL
PLAYGROUND_MAX_PROMPT_TOKENS = env_int("PLAYGROUND_MAX_PROMPT_TOKENS", 2048)
PLAYGROUND_MAX_NEW_TOKENS = env_int("PLAYGROUND_MAX_NEW_TOKENS", 512)
PLAYGROUND_MAX_SEQUENCES = env_int("PLAYGROUND_MAX_SEQUENCES", 16)
PLAYGROUND_MAX_CONCURRENT = env_int("PLAYGROUND_MAX_CONCURRENT", 2)
PLAYGROUND_DAILY_TOKENS = env_int("PLAYGROUND_DAILY_TOKENS", 200_000)
PLAYGROUND_QUEUE_CAP = env_int("PLAYGROUND_QUEUE_CAP", 256)
PLAYGROUND_RETENTION_DAYS = env_int("PLAYGROUND_RETENTION_DAYS", 90)
PLAYGROUND_STREAM_TTL_SECONDS = env_int("PLAYGROUND_STREAM_TTL_SECONDS", 3600)
PLAYGROUND_PAGE_UNWATCHED_SECONDS = env_int("PLAYGROUND_PAGE_UNWATCHED_SECONDS", 15)
PLAYGROUND_HEARTBEAT_SECONDS = float(os.environ.get("PLAYGROUND_HEARTBEAT_SECONDS", "2"))
PLAYGROUND_WORKER_TIMEOUT_SECONDS = float(os.environ.get("PLAYGROUND_WORKER_TIMEOUT_SECONDS", "10"))
PLAYGROUND_DRAIN_SECONDS = float(os.environ.get("PLAYGROUND_DRAIN_SECONDS", "20"))
PLAYGROUND_QUEUE_TIMEOUT_SECONDS = env_int("PLAYGROUND_QUEUE_TIMEOUT_SECONDS", 600)
# A reap that waited behind long tasks (hashing) is stale by the next one: let it expire.
CELERY_BEAT_SCHEDULE["inference-reap-jobs"] = {"task": "inference.reap_jobs", "schedule": 5.0,
                                               "options": {"expires": 5}}
CELERY_BEAT_SCHEDULE["inference-purge-texts"] = {"task": "inference.purge_expired_texts",
                                                 "schedule": crontab(hour=3, minute=30)}
CELERY_TASK_ROUTES["inference.*"] = {"queue": "default"}
