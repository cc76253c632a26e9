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


def test_demo_release_has_three_verified_variants_that_the_engine_loads_alike(local_storage, tmp_path, capsys):
    from inference_worker.engine import Engine
    from inference_worker.engine.convert import convert

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
        converted = convert(Path(variant.location), tmp_path / variant.name, tp=2)
        outputs[f"{variant.name}, converted"] = Engine.from_pretrained(converted, tp=1).generate(
            [[2, 10, 20, 30]], max_new_tokens=8)
    assert len({str(tokens) for tokens in outputs.values()}) == 1, outputs
    assert len(outputs["hf-safetensors"][0]) >= 1

    from django.test import Client

    from tests.artifacts.test_views import headings

    page = headings(Client().get("/releases/opt-demo/").content.decode())
    assert len(page) == len(set(page)), f"duplicate headings on the demo release's page: {page}"

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


def test_demo_release_files_are_float16_as_metas_were(local_storage):
    import argparse

    import torch
    from safetensors import safe_open

    call_command("make_demo_release")
    release = Release.objects.get(slug="opt-demo")
    root = {v.name: Path(v.location) for v in release.variants.all()}
    with safe_open(str(root["hf-safetensors"] / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    for name in ("metaseq-mp2", "fsdp-raw"):
        for file in root[name].glob("*.pt"):
            checkpoint = torch.load(file, weights_only=False)
            assert {t.dtype for t in checkpoint["model"].values()} == {torch.float16}, file
            assert isinstance(checkpoint["cfg"]["model"], argparse.Namespace)
            assert "decoder.output_projection.weight" not in checkpoint["model"]
