"""make_demo_release: three variants of one random OPT, stored, registered and loadable."""

from pathlib import Path

import pytest
from django.core.management import call_command

from artifacts.models import ArtifactFile, Release
from artifacts.storage import S3Storage

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_storage(settings, tmp_path) -> Path:
    settings.STORAGE_BACKEND, settings.STORAGE_LOCAL_ROOT = "local", tmp_path / "storage"
    return settings.STORAGE_LOCAL_ROOT


def test_demo_release_has_three_verified_variants_that_the_engine_loads_alike(local_storage, capsys):
    from inference_worker.engine import Engine

    call_command("make_demo_release")

    release = Release.objects.get(slug="opt-demo")
    assert sorted(release.variants.values_list("name", flat=True)) == ["fsdp-raw", "hf-safetensors", "metaseq-mp2"]
    assert not ArtifactFile.objects.exclude(integrity="ok").exists()
    assert set(release.documents.values_list("kind", flat=True)) == {"model_card", "data_card", "logbook", "paper"}
    assert ArtifactFile.objects.get(path="checkpoint_last-model_part-1-shard1.pt").expected_md5  # from its md5 list

    outputs = {}
    for variant in release.variants.all():
        engine = Engine.from_pretrained(Path(variant.location), tp=1)
        outputs[variant.name] = engine.generate([[2, 10, 20, 30]], max_new_tokens=8)
    assert outputs["hf-safetensors"] == outputs["metaseq-mp2"] == outputs["fsdp-raw"]
    assert len(outputs["hf-safetensors"][0]) >= 1

    call_command("make_demo_release")
    assert "already registered and verified" in capsys.readouterr().out


def test_demo_release_uploads_to_s3_when_configured(settings):
    settings.STORAGE_BACKEND, settings.S3_BUCKET = "s3", "gatehouse-test"
    call_command("make_demo_release", "--force")
    variant = Release.objects.get(slug="opt-demo").variants.get(name="hf-safetensors")
    assert variant.location == "s3://gatehouse-test/releases/opt-demo/hf-safetensors"
    storage = S3Storage("gatehouse-test")
    file = variant.files.get(path="model.safetensors")
    assert storage.size(file.storage_key) == file.size and file.integrity == "ok"
