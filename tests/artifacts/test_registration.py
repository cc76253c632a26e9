"""register_release and verify_release: checksums from the stored bytes, problems withheld."""

import hashlib

import pytest
from django.core.management import CommandError, call_command

from artifacts.models import ArtifactFile
from artifacts.services.registration import RegistrationError, md5_list_parse
from tests.artifacts.conftest import sha256

pytestmark = pytest.mark.django_db


def test_register_release_records_every_file_with_checksums_from_the_bytes(release, weight_dir, capsys):
    call_command("register_release", "opt-test", "--variant", "metaseq-mp2", "--from", str(weight_dir))

    files = {f.path: f for f in ArtifactFile.objects.filter(variant__release=release)}
    assert set(files) == {"checkpoint_last-model_part-0-shard0.pt", "checkpoint_last-model_part-1-shard0.pt",
                          "nested/dict.txt"}
    for path, file in files.items():
        data = (weight_dir / path).read_bytes()
        assert (file.size, file.sha256, file.md5) == (len(data), sha256(weight_dir / path), hashlib.md5(data).hexdigest())
        assert file.integrity == ArtifactFile.Integrity.OK
    output = capsys.readouterr().out
    assert "[3/3]" in output and "All 3 files of opt-test/metaseq-mp2 verified" in output


def test_a_published_md5_that_does_not_match_is_reported_per_file_and_withheld(release, weight_dir, tmp_path, capsys):
    good = hashlib.md5((weight_dir / "checkpoint_last-model_part-0-shard0.pt").read_bytes()).hexdigest()
    md5_list = tmp_path / "md5.csv"
    md5_list.write_text(f"checkpoint_last-model_part-0-shard0.pt,{good}\n"
                        f"checkpoint_last-model_part-1-shard0.pt,{'0' * 32}\n")

    with pytest.raises(CommandError, match="1 file"):
        call_command("register_release", "opt-test", "--variant", "v", "--from", str(weight_dir),
                     "--md5-list", str(md5_list))

    assert "checkpoint_last-model_part-1-shard0.pt: Does not match the published md5" in capsys.readouterr().out
    bad = ArtifactFile.objects.get(path="checkpoint_last-model_part-1-shard0.pt")
    assert bad.integrity == ArtifactFile.Integrity.MD5_MISMATCH and not bad.is_downloadable
    assert ArtifactFile.objects.get(path="checkpoint_last-model_part-0-shard0.pt").is_downloadable


def test_md5_lists_in_md5sum_and_csv_forms():
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    assert md5_list_parse(f"{md5}  a.pt\n{md5} *b.pt\n") == {"a.pt": md5, "b.pt": md5}
    assert md5_list_parse(f"file,md5\nc.pt,{md5.upper()}\n") == {"c.pt": md5}
    with pytest.raises(RegistrationError, match="line 2"):
        md5_list_parse(f"a.pt,{md5}\nnot a checksum line\n")


def test_register_from_s3_hashes_in_parallel_celery_tasks(release, weight_dir, s3_bucket, s3_prefix, capsys):
    for path in weight_dir.rglob("*"):
        if path.is_file():
            s3_bucket.put_file(f"{s3_prefix}/weights/{path.relative_to(weight_dir).as_posix()}", path)

    call_command("register_release", "opt-test", "--variant", "hf", "--from",
                 f"s3://{s3_bucket.bucket}/{s3_prefix}/weights", "--hash-with", "celery")

    assert "in parallel Celery tasks" in capsys.readouterr().out
    file = ArtifactFile.objects.get(path="nested/dict.txt")
    assert file.storage_key == f"{s3_prefix}/weights/nested/dict.txt"
    assert file.sha256 == sha256(weight_dir / "nested/dict.txt")


def test_registration_errors_are_explained(release, tmp_path):
    with pytest.raises(CommandError, match="No such directory"):
        call_command("register_release", "opt-test", "--variant", "v", "--from", str(tmp_path / "absent"))
    with pytest.raises(CommandError, match="neither s3://bucket/prefix nor an absolute directory"):
        call_command("register_release", "opt-test", "--variant", "v", "--from", "relative/dir")
    with pytest.raises(CommandError, match="give --name and --licence"):
        call_command("register_release", "opt-new", "--variant", "v", "--from", str(tmp_path))


def test_verify_release_catches_a_corrupted_and_a_missing_file(local_variant, weight_dir, capsys):
    shard = weight_dir / "checkpoint_last-model_part-0-shard0.pt"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    (weight_dir / "nested/dict.txt").unlink()

    with pytest.raises(CommandError, match="2 of 3 file"):
        call_command("verify_release", "opt-test")

    output = capsys.readouterr().out
    assert "checkpoint_last-model_part-0-shard0.pt: Stored bytes changed since registration" in output
    assert "nested/dict.txt: Missing from storage" in output
    statuses = dict(ArtifactFile.objects.values_list("path", "integrity"))
    assert statuses == {"checkpoint_last-model_part-0-shard0.pt": "corrupted",
                        "checkpoint_last-model_part-1-shard0.pt": "ok", "nested/dict.txt": "missing"}


def test_verify_release_on_s3_detects_replaced_bytes(s3_variant, s3_bucket, s3_prefix, tmp_path):
    replacement = tmp_path / "evil.pt"
    replacement.write_bytes(b"not the weights")
    s3_bucket.put_file(f"{s3_prefix}/opt-test/mp2/checkpoint_last-model_part-1-shard0.pt", replacement)

    with pytest.raises(CommandError, match="1 of 3"):
        call_command("verify_release", "opt-test", "--hash-with", "inline")
    assert ArtifactFile.objects.get(path="checkpoint_last-model_part-1-shard0.pt").integrity == "corrupted"


def test_releases_are_re_verified_on_a_schedule(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["artifacts-verify-releases"]
    assert schedule["task"] == "artifacts.verify_all_releases"


def test_the_scheduled_verification_withholds_a_corrupted_file(local_variant, weight_dir):
    from artifacts.tasks import verify_all_releases_task

    (weight_dir / "nested/dict.txt").write_bytes(b"tampered")
    assert verify_all_releases_task.delay().get() == 3
    assert ArtifactFile.objects.get(path="nested/dict.txt").integrity == "corrupted"


@pytest.mark.django_db(transaction=True)
def test_parallel_hashing_by_a_real_celery_worker(release, weight_dir, tmp_path, capsys):
    from tests.browser import celery_worker, tasks_sent_to_the_broker

    with tasks_sent_to_the_broker(), celery_worker(tmp_path / "mail", tmp_path / "worker.log"):
        call_command("register_release", "opt-test", "--variant", "fsdp", "--from", str(weight_dir),
                     "--hash-with", "celery")

    assert "[3/3]" in capsys.readouterr().out
    for file in ArtifactFile.objects.all():
        assert file.integrity == "ok" and file.sha256 == sha256(weight_dir / file.path)
    assert "artifacts.hash_files" in (tmp_path / "worker.log").read_text()
