import datetime
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from access.models import Grant, Licence, LicenceVersion
from artifacts.models import Release
from artifacts.services.registration import files_hash, variant_register
from artifacts.storage import S3Storage

SHARD_NAMES = ["checkpoint_last-model_part-0-shard0.pt", "checkpoint_last-model_part-1-shard0.pt", "dict.txt"]


@pytest.fixture
def licence(db):
    licence = Licence.objects.create(slug="opt-noncommercial", title="OPT non-commercial licence")
    LicenceVersion.objects.create(licence=licence, number=1, text_markdown="# Terms\nResearch only.",
                                  published_at=timezone.now())
    return licence


@pytest.fixture
def release(licence):
    return Release.objects.create(slug="opt-test", name="OPT test", licence=licence, parameter_count=125_000_000)


@pytest.fixture
def grant(user, release):
    return grant_for(user, release)


def grant_for(user, release) -> Grant:
    return Grant.objects.create(user=user, release=release, licence_version=release.licence.current_version(),
                                expires_at=timezone.now() + datetime.timedelta(days=365))


@pytest.fixture
def weight_dir(tmp_path) -> Path:
    """A directory of small 'shards' with random bytes of odd sizes."""
    directory = tmp_path / "weights"
    for index, name in enumerate(SHARD_NAMES):
        path = directory / ("nested/" if index == 2 else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(150_001 + index * 777))
    return directory


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_variant(release, weight_dir):
    variant = variant_register(release=release, name="metaseq-mp2", location=str(weight_dir))
    files_hash(files=list(variant.files.all()))
    return variant


@pytest.fixture
def s3_bucket():
    storage = S3Storage(f"test-{uuid.uuid4().hex[:12]}")
    storage.ensure_bucket()
    return storage


@pytest.fixture
def s3_variant(release, weight_dir, s3_bucket):
    for path in sorted(p for p in weight_dir.rglob("*") if p.is_file()):
        s3_bucket.put_file(f"opt-test/mp2/{path.relative_to(weight_dir).as_posix()}", path)
    variant = variant_register(release=release, name="metaseq-mp2", location=f"s3://{s3_bucket.bucket}/opt-test/mp2")
    files_hash(files=list(variant.files.all()))
    return variant
