"""The official huggingface_hub client, unmodified, downloads releases from the portal's Hub API,
under every rule of the portal (a live server, the local storage backend)."""

import contextlib
import hashlib
import json
import socket
import threading
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from access.services.tokens import api_token_create
from artifacts.models import ArtifactFile, DownloadEvent
from artifacts.services.registration import files_hash, variant_register
from tests.artifacts.conftest import grant_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub_variant(release, tmp_path):
    """A Hugging Face–format variant (config.json at its top): the repository's ``main``."""
    directory = tmp_path / "hf"
    (directory / "tokenizer").mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "opt"}))
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 700)
    (directory / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    variant = variant_register(release=release, name="hf-safetensors", location=str(directory))
    files_hash(files=list(variant.files.all()))
    return variant


def token_of(user) -> str:
    return api_token_create(user=user, name="hf", days=30, scopes=["download"], created_with_mfa=False)[1]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(live_server, token, tmp_path, **kwargs) -> Path:
    return Path(snapshot_download("opt-test", endpoint=live_server.url, token=token,
                                  cache_dir=tmp_path / "cache", **kwargs))


def test_snapshot_download_of_main_and_of_another_variant_as_a_revision(live_server, user, grant, hub_variant,
                                                                        local_variant, tmp_path):
    token = token_of(user)
    folder = download(live_server, token, tmp_path)
    expected = {f.path: f.sha256 for f in hub_variant.files.all()}
    assert {str(p.relative_to(folder)): sha256_of(p) for p in folder.rglob("*") if p.is_file()} == expected
    assert DownloadEvent.objects.filter(counts_as_download=True).count() == 3, "one download per file"

    other = download(live_server, token, tmp_path, revision="metaseq-mp2")
    assert {str(p.relative_to(other)): sha256_of(p) for p in other.rglob("*") if p.is_file()} == {
        f.path: f.sha256 for f in local_variant.files.all()}

    events = DownloadEvent.objects.count()
    assert download(live_server, token, tmp_path) == folder
    assert DownloadEvent.objects.count() == events, "a second call finds the files cached and downloads nothing"


def test_the_repository_names_its_commit_and_files_and_the_commit_follows_the_contents(live_server, user, grant,
                                                                                       hub_variant, tmp_path):
    api = HfApi(endpoint=live_server.url, token=token_of(user))
    info = api.model_info("gatehouse/opt-test")
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors", "tokenizer/vocab.json"]
    assert api.model_info("opt-test", revision=info.sha).sha == info.sha
    files = {f.path: f for f in api.list_repo_tree("opt-test", recursive=True, revision=info.sha)}
    assert files["model.safetensors"].lfs.sha256 == ArtifactFile.objects.get(path="model.safetensors").sha256
    assert api.model_info("opt-test").sha == info.sha, "stable while the files are"
    (Path(hub_variant.location) / "config.json").write_text(json.dumps({"model_type": "opt", "changed": True}))
    files_hash(files=list(variant_register(release=hub_variant.release, name="hf-safetensors",
                                           location=hub_variant.location).files.all()))
    assert api.model_info("opt-test").sha != info.sha, "a new commit once the registered contents change"
    with pytest.raises(RevisionNotFoundError):
        api.model_info("opt-test", revision="no-such-variant")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("no-such-release")


def test_anonymous_unapproved_and_revoked_callers_get_the_client_s_gated_errors(live_server, user, release,
                                                                              hub_variant, tmp_path):
    with pytest.raises(GatedRepoError) as anonymous:
        download(live_server, None, tmp_path)
    assert anonymous.value.response.status_code == 401
    assert "HF_TOKEN" in anonymous.value.response.headers["X-Error-Message"]

    stranger = UserFactory()
    with pytest.raises(GatedRepoError) as unapproved:
        download(live_server, token_of(stranger), tmp_path)
    assert unapproved.value.response.status_code == 403 and "apply for it" in str(
        unapproved.value.response.headers.get("X-Error-Message"))

    grant = grant_for(user, release)
    token = token_of(user)
    from django.utils import timezone

    grant.revoked_at, grant.revoke_reason = timezone.now(), "Licence breach"
    grant.save()
    with pytest.raises(GatedRepoError):
        download(live_server, token, tmp_path)

    expired = grant_for(UserFactory(), release)
    expired.expires_at = timezone.now()
    expired.save()
    with pytest.raises(GatedRepoError) as refused:
        download(live_server, token_of(expired.user), tmp_path)
    assert "renew it" in refused.value.response.headers["X-Error-Message"]

    from huggingface_hub.errors import HfHubHTTPError

    deactivated = grant_for(UserFactory(), release).user
    deactivated_token = token_of(deactivated)
    deactivated.is_active = False
    deactivated.save()
    with pytest.raises(HfHubHTTPError) as unknown:
        download(live_server, deactivated_token, tmp_path)
    assert unknown.value.response.status_code == 401
    assert not DownloadEvent.objects.filter(counts_as_download=True).exists()


def test_withheld_files_are_refused_and_left_out(live_server, user, grant, hub_variant, tmp_path):
    ArtifactFile.objects.filter(path="model.safetensors").update(integrity=ArtifactFile.Integrity.CORRUPTED)
    folder = download(live_server, token_of(user), tmp_path)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "config.json", "tokenizer/vocab.json"]


@contextlib.contextmanager
def network_that_drops_once(target: str, after_bytes: int):
    """A TCP relay to ``target`` (host:port) that cuts the first connection once it has carried
    ``after_bytes`` towards the client, as a dropped network does; later connections pass."""
    host, port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    dropped = threading.Event()

    def relay(source, sink, budget=None):
        sent = 0
        try:
            while data := source.recv(65536):
                if budget is not None and not dropped.is_set() and sent + len(data) > budget:
                    sink.sendall(data[: budget - sent])
                    dropped.set()
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((host, int(port)))
            budget = None if dropped.is_set() else after_bytes
            threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
            threading.Thread(target=relay, args=(upstream, client, budget), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", dropped
    finally:
        listener.close()


def test_an_interrupted_download_resumes_and_retries_are_one_download(live_server, user, grant, release, tmp_path):
    from huggingface_hub import constants, hf_hub_download

    # The client resumes from what it has written, and it writes in chunks of DOWNLOAD_CHUNK_SIZE (10 MB).
    size = constants.DOWNLOAD_CHUNK_SIZE + 3_000_001
    directory = tmp_path / "big"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    variant = variant_register(release=release, name="big", location=str(directory))
    files_hash(files=list(variant.files.all()))
    token = token_of(user)
    file = variant.files.get()
    cut_at = constants.DOWNLOAD_CHUNK_SIZE + 100_000
    with network_that_drops_once(live_server.url.removeprefix("http://"), after_bytes=cut_at) as (endpoint, dropped):
        path = hf_hub_download("opt-test", "model.safetensors", revision="big", endpoint=endpoint, token=token,
                               cache_dir=tmp_path / "cache")
    assert dropped.is_set() and sha256_of(Path(path)) == file.sha256
    first, resumed = DownloadEvent.objects.filter(file=file).order_by("pk")
    assert (first.range_header, first.counts_as_download) == ("", True)
    assert resumed.range_header.startswith("bytes=") and not resumed.counts_as_download, "the resume is free"

    for _ in range(2):  # forced again, twice, the same day from the same address: still that one download
        hf_hub_download("opt-test", "model.safetensors", revision="big", endpoint=live_server.url, token=token,
                        cache_dir=tmp_path / "again", force_download=True)
    assert DownloadEvent.objects.filter(file=file).count() == 4
    assert DownloadEvent.objects.filter(file=file, counts_as_download=True).count() == 1


def test_the_per_file_limit_holds_through_the_hub_as_through_dl(live_server, user, grant, hub_variant, tmp_path,
                                                                settings, monkeypatch):
    import time

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    from artifacts.services.downloads import manifest_issue

    settings.DOWNLOAD_LIMIT_PER_FILE = 1
    manifest = manifest_issue(user=user, release=grant.release, variant=hub_variant, base_url=live_server.url)
    import urllib.request

    link = next(f["url"] for f in manifest["files"] if f["path"] == "config.json")
    urllib.request.urlopen(link).read()  # the day's one download of config.json, through /dl/
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the client's five retries of a 429, without waiting
    with pytest.raises(HfHubHTTPError) as refused:
        hf_hub_download("opt-test", "config.json", endpoint=live_server.url, token=token_of(user),
                        cache_dir=tmp_path / "cache")
    assert refused.value.response.status_code == 429 and "Retry-After" not in refused.value.response.headers
    assert "You have downloaded this file 1 times" in refused.value.response.headers["X-Error-Message"]
    assert DownloadEvent.objects.filter(file__path="config.json", counts_as_download=True).count() == 1


def test_s3_backed_releases_download_through_the_presigned_redirect(live_server, user, grant, s3_variant, tmp_path):
    folder = download(live_server, token_of(user), tmp_path, revision="metaseq-mp2")
    assert {str(p.relative_to(folder)): sha256_of(p) for p in folder.rglob("*") if p.is_file()} == {
        f.path: f.sha256 for f in s3_variant.files.all()}
    events = DownloadEvent.objects.all()
    assert len(events) == 3 and all(e.outcome == DownloadEvent.Outcome.REDIRECTED and e.counts_as_download
                                    for e in events)


FROM_PRETRAINED = """
import json, sys, torch, transformers
model = transformers.OPTForCausalLM.from_pretrained("gatehouse/opt-demo", dtype=torch.float32).eval()
prompt = [2, 10, 20, 30, 40]
with torch.no_grad():
    out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=1)
print(json.dumps(out[0, len(prompt):].tolist()))
"""


def test_from_pretrained_through_the_endpoint_loads_the_demo_model_and_generates_as_our_engine(
        live_server, user, settings, tmp_path):
    """What a researcher runs: HF_ENDPOINT and HF_TOKEN set, then transformers as usual."""
    import os
    import subprocess
    import sys

    from django.core.management import call_command

    from artifacts.models import Release
    from inference_worker.engine import Engine

    settings.STORAGE_BACKEND, settings.STORAGE_LOCAL_ROOT = "local", tmp_path / "storage"
    call_command("make_demo_release")
    release = Release.objects.get(slug="opt-demo")
    grant_for(user, release)
    env = {**os.environ, "HF_ENDPOINT": live_server.url, "HF_TOKEN": token_of(user), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", FROM_PRETRAINED], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    ours = Engine.from_pretrained(Path(release.variants.get(name="hf-safetensors").location), tp=1).generate(
        [[2, 10, 20, 30, 40]], max_new_tokens=8)[0]
    assert ours and ours == theirs[: len(ours)]
    assert DownloadEvent.objects.filter(file__path="model.safetensors", counts_as_download=True).count() == 1


def test_the_download_page_shows_the_hugging_face_commands_and_hf_download_works(live_server, user, grant,
                                                                                 hub_variant, tmp_path):
    import os
    import subprocess
    import sys

    from django.test import Client

    client = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    client.force_login(user)
    page = client.get("/releases/opt-test/download/").content.decode()
    assert f"export HF_ENDPOINT={live_server.url} HF_TOKEN=" in page
    assert "hf download gatehouse/opt-test --local-dir opt-test" in page
    assert 'from_pretrained("gatehouse/opt-test")' in page

    env = {**os.environ, "HF_ENDPOINT": live_server.url, "HF_TOKEN": token_of(user), "HF_HOME": str(tmp_path / "hf")}
    hf = Path(sys.executable).parent / "hf"
    result = subprocess.run([str(hf), "download", "gatehouse/opt-test", "--local-dir", str(tmp_path / "out")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = ArtifactFile.objects.get(path="model.safetensors").sha256
    assert sha256_of(tmp_path / "out" / "model.safetensors") == expected


def test_resolve_costs_the_same_queries_however_many_files_the_variant_has(user, grant, hub_variant, tmp_path):
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_of(user)}")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.head("/gatehouse/opt-test/resolve/main/config.json").status_code == 200
        return len(captured)

    queries()  # the token's first use of the minute also notes it
    few = queries()
    ArtifactFile.objects.bulk_create(ArtifactFile(variant=hub_variant, path=f"extra/{i}.bin", size=1, sha256="0" * 64,
                                                  integrity="ok") for i in range(200))
    assert queries() == few


def test_a_new_licence_version_gates_the_repository_until_accepted(live_server, user, grant, hub_variant, tmp_path):
    from huggingface_hub import hf_hub_download

    from access.services.licences import licence_version_publish

    token = token_of(user)
    licence_version_publish(licence=grant.release.licence, text_markdown="# Terms v2", by=None)
    for method in (lambda: download(live_server, token, tmp_path),
                   lambda: hf_hub_download("opt-test", "config.json", endpoint=live_server.url, token=token,
                                           cache_dir=tmp_path / "one")):
        with pytest.raises(GatedRepoError) as refused:
            method()
        assert "Accept version 2" in refused.value.response.headers["X-Error-Message"]
    from django.test import Client

    get = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/opt-test/resolve/main/config.json")  # no HEAD first
    assert get.status_code == 403 and get["X-Error-Code"] == "GatedRepo" and "Accept version 2" in get["X-Error-Message"]
    assert not DownloadEvent.objects.filter(counts_as_download=True).exists()
