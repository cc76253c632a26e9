"""Pytest plugin loaded before Django: the test suite's service defaults.

Tests run against real PostgreSQL and Redis on their standard local ports unless the
environment says otherwise (``make test`` exports what it started).
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gatehouse")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/2")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
os.environ.setdefault("S3_ENDPOINT_URL", "http://127.0.0.1:8333")
os.environ.setdefault("S3_ACCESS_KEY_ID", "gatehouse-test")
os.environ.setdefault("S3_SECRET_ACCESS_KEY", "gatehouse-test-secret")
os.environ.setdefault("PLAYGROUND_REDIS_URL", "redis://127.0.0.1:6379/3")
