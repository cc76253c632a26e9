"""The web side reads a release's tokenizer, vocabulary size and positions from its verified files."""

import json
import shutil
import uuid
from pathlib import Path

import pytest

from artifacts.models import ArtifactFile
from artifacts.services.registration import files_hash, variant_register
from artifacts.storage import S3Storage
from inference_worker import release_model
from inference_worker.engine import writers
from inference_worker.release_model import ReleaseModelUnavailable, release_model_info
from inference_worker.tokenization import OPTTokenizer
from tests.access.factories import ReleaseFactory
from tests.artifacts.conftest import TEST_BUCKET
from tests.inference_worker.conftest import CORPUS, VOCAB

pytestmark = pytest.mark.django_db
TEXT = "Hello world! </s> is text here"


@pytest.fixture
def hf_dir(hf_dirs, tmp_path) -> Path:
    """A Hugging Face checkpoint directory of our own (config.json, safetensors, vocab + merges)."""
    return Path(shutil.copytree(hf_dirs["pre_ln"], tmp_path / "hf"))


def register(release, name: str, location: str, *, verify: bool = True):
    variant = variant_register(release=release, name=name, location=location)
    if verify:
        files_hash(files=list(variant.files.all()))
    return variant


def metaseq_tokenizer_dir(path: Path, vocab_size: int = 300) -> Path:
    """gpt2-vocab.json + gpt2-merges.txt beside a weight file, as a metaseq variant ships them."""
    writers.train_tokenizer(path, CORPUS, vocab_size=vocab_size, metaseq_names=True)
    (path / "reshard-model_part-0.pt").write_bytes(b"weights")
    return path


def test_a_local_release_gives_its_tokenizer_vocabulary_and_positions(hf_dir, tmp_path):
    release = ReleaseFactory()
    register(release, "hf-safetensors", str(hf_dir))
    register(release, "metaseq-mp2", str(metaseq_tokenizer_dir(tmp_path / "metaseq")))

    info = release_model_info(release=release)

    config = json.loads((hf_dir / "config.json").read_text())
    assert (info.vocab_size, info.max_positions) == (VOCAB, 128) == (config["vocab_size"], config["max_position_embeddings"])
    assert (info.bos_id, info.eos_id) == (2, 2)
    expected = OPTTokenizer.from_directory(hf_dir)  # the Hugging Face variant's, not metaseq's
    assert info.tokenizer.vocab_size == expected.vocab_size == 400
    assert info.tokenizer.encode(TEXT) == expected.encode(TEXT)
    assert 2 not in info.tokenizer.encode(TEXT)[1:]


def test_a_release_in_s3_gives_its_tokenizer_vocabulary_and_positions(hf_dir):
    storage = S3Storage(TEST_BUCKET)
    storage.ensure_bucket()
    prefix = f"run-{uuid.uuid4().hex[:12]}/opt-test/hf"
    for path in sorted(hf_dir.iterdir()):
        storage.put_file(f"{prefix}/{path.name}", path)
    release = ReleaseFactory()
    register(release, "hf-safetensors", f"s3://{TEST_BUCKET}/{prefix}")

    info = release_model_info(release=release)

    assert (info.vocab_size, info.max_positions) == (VOCAB, 128)
    assert info.tokenizer.encode(TEXT) == OPTTokenizer.from_directory(hf_dir).encode(TEXT)


def test_config_and_tokenizer_may_come_from_two_variants(hf_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        (hf_dir / name).unlink()
    release = ReleaseFactory()
    register(release, "hf-safetensors", str(hf_dir))
    metaseq = metaseq_tokenizer_dir(tmp_path / "metaseq")
    register(release, "metaseq-mp2", str(metaseq))

    info = release_model_info(release=release)

    assert info.max_positions == 128
    assert info.tokenizer.encode(TEXT) == OPTTokenizer.from_directory(metaseq).encode(TEXT)


def test_a_release_without_config_or_tokenizer_says_what_is_missing(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "checkpoint_last-model_part-0-shard0.pt").write_bytes(b"weights")
    release = ReleaseFactory()
    register(release, "fsdp-raw", str(weights))
    with pytest.raises(ReleaseModelUnavailable, match="has no verified config.json and no verified tokenizer files"):
        release_model_info(release=release)

    register(release, "metaseq-mp2", str(metaseq_tokenizer_dir(tmp_path / "metaseq")))
    with pytest.raises(ReleaseModelUnavailable, match="has no verified config.json\\.$"):
        release_model_info(release=release)


def test_files_not_verified_are_not_used(hf_dir, tmp_path):
    release = ReleaseFactory()
    register(release, "hf-safetensors", str(hf_dir), verify=False)
    with pytest.raises(ReleaseModelUnavailable, match="not verified: hf-safetensors/config.json \\(not hashed yet\\)"):
        release_model_info(release=release)

    files_hash(files=list(ArtifactFile.objects.filter(variant__release=release)))
    (hf_dir / "vocab.json").write_text("{}")
    files_hash(files=list(ArtifactFile.objects.filter(variant__release=release, path="vocab.json")))
    with pytest.raises(ReleaseModelUnavailable, match="hf-safetensors/vocab.json \\(stored bytes changed"):
        release_model_info(release=release)

    metaseq = metaseq_tokenizer_dir(tmp_path / "metaseq")  # a verified tokenizer elsewhere is used instead
    register(release, "metaseq-mp2", str(metaseq))
    assert release_model_info(release=release).tokenizer.encode(TEXT) == OPTTokenizer.from_directory(metaseq).encode(TEXT)


def test_bytes_changed_in_storage_since_verification_are_refused(hf_dir):
    release = ReleaseFactory()
    register(release, "hf-safetensors", str(hf_dir))
    (hf_dir / "config.json").write_text(json.dumps({"vocab_size": 10**6, "max_position_embeddings": 10**6}))
    with pytest.raises(ReleaseModelUnavailable, match="config.json has changed in storage since it was verified"):
        release_model_info(release=release)


def test_the_cache_rereads_a_release_registered_again(hf_dir, monkeypatch, django_assert_num_queries):
    release = ReleaseFactory()
    register(release, "hf-safetensors", str(hf_dir))
    first = release_model_info(release=release)
    with django_assert_num_queries(0):
        assert release_model_info(release=release) is first, "looked up moments ago: no queries"
    monkeypatch.setattr(release_model, "RECHECK_SECONDS", 0.0)  # as if the window had passed
    monkeypatch.setattr(release_model, "_recent", {})
    assert release_model_info(release=release) is first, "the same files: the same reading"

    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    writers.train_tokenizer(hf_dir, CORPUS, vocab_size=300)
    register(release, "hf-safetensors", str(hf_dir))

    again = release_model_info(release=release)
    assert again.max_positions == 64 and first.max_positions == 128
    assert again.tokenizer.vocab_size == 300 != first.tokenizer.vocab_size
