"""Both download clients, run against a live portal: resume, verify, refuse corrupted bytes."""

import os
import subprocess
import time
import sys
from pathlib import Path

import pytest
from django.test import Client

from artifacts.models import DownloadEvent
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)
SHARD = "checkpoint_last-model_part-0-shard0.pt"


def fetch_client(live_server, user, name: str, directory: Path) -> Path:
    """Download a client as the signed-in researcher would, from the live portal."""
    client = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    response = client.get(f"/api/v1/releases/opt-test/{name}?variant=metaseq-mp2")
    assert response.status_code == 200, response.content
    assert f"{live_server.url}/dl/".encode() in response.content
    script = directory / name
    script.write_bytes(response.content)
    return script


def run_client(script: Path, dest: Path) -> subprocess.CompletedProcess:
    command = ["bash", str(script), str(dest)] if script.suffix == ".sh" else [
        sys.executable, str(script), "--dest", str(dest), "--parallel", "2"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ, GATEHOUSE_TOKEN=""))


@pytest.mark.parametrize("name", ["download.sh", "gatehouse_download.py"])
def test_client_downloads_everything_and_verifies_it(live_server, user, grant, local_variant, weight_dir, tmp_path, name):
    script = fetch_client(live_server, user, name, tmp_path)
    dest = tmp_path / "out"
    result = run_client(script, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    for path in weight_dir.rglob("*"):
        if path.is_file():
            assert (dest / path.relative_to(weight_dir)).read_bytes() == path.read_bytes()
    assert not list(dest.rglob("*.part"))

    rerun = run_client(script, dest)  # nothing left to do: everything is already verified
    assert rerun.returncode == 0 and "already verified" in rerun.stdout + rerun.stderr


@pytest.mark.parametrize("name", ["download.sh", "gatehouse_download.py"])
def test_client_resumes_an_interrupted_download(live_server, user, grant, local_variant, weight_dir, tmp_path, name):
    script = fetch_client(live_server, user, name, tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    original = (weight_dir / SHARD).read_bytes()
    (dest / f"{SHARD}.part").write_bytes(original[:60_000])  # what an interrupted run left behind

    result = run_client(script, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dest / SHARD).read_bytes() == original
    resumed = DownloadEvent.objects.filter(file__path=SHARD).values_list("range_header", flat=True)
    assert list(resumed) == ["bytes=60000-"]


@pytest.mark.parametrize("name", ["download.sh", "gatehouse_download.py"])
def test_client_refuses_a_corrupted_file(live_server, user, grant, local_variant, weight_dir, tmp_path, name):
    script = fetch_client(live_server, user, name, tmp_path)
    shard = weight_dir / SHARD
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x01  # corrupted in storage after registration, before anyone re-verified
    shard.write_bytes(bytes(data))
    dest = tmp_path / "out"

    result = run_client(script, dest)
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stdout + result.stderr
    assert not (dest / SHARD).exists() and not (dest / f"{SHARD}.part").exists()
    assert (dest / "nested/dict.txt").exists()


def test_python_client_renews_expired_links_with_an_api_token(
    live_server, user, grant, local_variant, weight_dir, tmp_path, monkeypatch
):
    from django.core import signing

    from access.services.tokens import api_token_create

    _, raw_token = api_token_create(user=user, name="cluster", days=30, scopes=["download"], created_with_mfa=False)
    two_days_ago = time.time() - 2 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: two_days_ago)
    script = fetch_client(live_server, user, "gatehouse_download.py", tmp_path)  # its links are already expired
    monkeypatch.undo()
    dest = tmp_path / "out"

    without_token = run_client(script, dest)
    assert without_token.returncode != 0 and "links expired" in without_token.stderr

    result = subprocess.run([sys.executable, str(script), "--dest", str(dest), "--token", raw_token],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (dest / SHARD).read_bytes() == (weight_dir / SHARD).read_bytes()
