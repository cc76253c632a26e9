import datetime
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from access.models import Grant, Licence, LicenceAcceptance, LicenceVersion
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


def grant_for(user, release, *, signed: bool = True) -> Grant:
    """An approved, active grant; ``signed``: the user has accepted the current licence text."""
    version = release.licence.current_version()
    if signed:
        LicenceAcceptance.objects.create(user=user, licence_version=version, signature_name=user.get_full_name(),
                                         text_sha256=version.sha256)
    return Grant.objects.create(user=user, release=release, licence_version=version,
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


TEST_BUCKET = "gatehouse-test"


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix in the test bucket (one bucket: SeaweedFS gives each bucket its own volumes)."""
    return f"run-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_bucket():
    storage = S3Storage(TEST_BUCKET)
    storage.ensure_bucket()
    return storage


@pytest.fixture
def s3_variant(release, weight_dir, s3_bucket, s3_prefix):
    for path in sorted(p for p in weight_dir.rglob("*") if p.is_file()):
        s3_bucket.put_file(f"{s3_prefix}/opt-test/mp2/{path.relative_to(weight_dir).as_posix()}", path)
    variant = variant_register(release=release, name="metaseq-mp2",
                               location=f"s3://{s3_bucket.bucket}/{s3_prefix}/opt-test/mp2")
    files_hash(files=list(variant.files.all()))
    return variant
