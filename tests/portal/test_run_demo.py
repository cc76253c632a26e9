"""`make run` (scripts/run-demo.sh): the demo serves a completion through the production processes
(its own Redis, uvicorn, Celery with beat, the GPU worker on CPU) and a file through the Hub
endpoint, and Ctrl-C stops all of them."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")
# The suite's services: the demo must run on its embedded defaults and a Redis of its own.
SERVICE_VARIABLES = re.compile(r"^(DATABASE_|REDIS_|CELERY_|PLAYGROUND_|S3_|STORAGE_|DJANGO_SETTINGS_MODULE$)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(log: Path, pattern: str, process: subprocess.Popen, seconds: float = 180) -> re.Match:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        assert process.poll() is None, f"run-demo.sh exited ({process.returncode}):\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no {pattern!r} in {seconds} s:\n{log.read_text()[-4000:]}")


def processes_with(variable: str) -> list[str]:
    """Command lines of the processes whose environment holds ``variable`` (NAME=value)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if variable.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):
            continue
    return found


def spoofed_addresses_still_hit_the_per_address_login_limit(base: str) -> bool:
    """The demo's server trusts no forwarded header: failed logins claiming ever new addresses in
    X-Forwarded-For all count against this one client (10 a minute)."""
    with httpx.Client(base_url=base, timeout=10) as http:
        for attempt in range(12):
            page = http.get("/accounts/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            answer = http.post("/accounts/login/", data={
                "csrfmiddlewaretoken": token, "login": f"nobody{attempt}@example.org", "password": "wrong-password-1"},
                headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}", "Referer": base + "/accounts/login/"})
            if "Too many failed login attempts" in answer.text:
                return attempt == 10
    return False


def test_the_demo_answers_a_completion_and_ctrl_c_stops_everything_it_started(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not SERVICE_VARIABLES.match(key)}
    env.update(GATEHOUSE_VAR_DIR=str(tmp_path / "var"), HOST="127.0.0.1", PORT=str(port))
    log = tmp_path / "run.log"
    with log.open("w") as out:
        demo = subprocess.Popen(  # Ctrl-C in a terminal: SIGINT to a process group that does not ignore it
            ["scripts/run-demo.sh"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(log, r"consuming gpu\.opt-demo", demo)
        redis_url = wait_for(log, r"Redis: (redis://\S+)", demo).group(1)
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/accounts/login/"):
            assert urllib.request.urlopen(base + path, timeout=10).status == 200
        assert "/playground/" in log.read_text()

        # The reviewer approves the demo application; the researcher prompts through the API.
        grant = subprocess.run([PY, "manage.py", "shell", "-v", "0", "-c", (
            "from access.models import Application, User\n"
            "from access.services.applications import application_approve\n"
            "from access.services.tokens import api_token_create\n"
            "application = Application.objects.get(user__email='researcher@gatehouse.example')\n"
            "application_approve(application=application, by=User.objects.get(email='reviewer@gatehouse.example'))\n"
            "print(api_token_create(user=application.user, name='demo', days=1, scopes=['inference', 'download'],"
            " created_with_mfa=False)[1])")],
            cwd=ROOT, env={**env, "REDIS_URL": redis_url}, capture_output=True, text=True, timeout=120)
        assert grant.returncode == 0, grant.stderr
        request = urllib.request.Request(
            base + "/api/v1/completions", method="POST",
            data=json.dumps({"model": "opt-demo", "prompt": "Hello", "max_tokens": 8}).encode(),
            headers={"Authorization": f"Bearer {grant.stdout.split()[-1]}", "Content-Type": "application/json"})
        completion = json.load(urllib.request.urlopen(request, timeout=60))
        assert completion["choices"][0]["finish_reason"] == "length"
        assert completion["usage"]["completion_tokens"] == 8
        # The Hub endpoint on the demo's SQLite and local storage: the file itself, with its headers.
        config = urllib.request.urlopen(urllib.request.Request(
            base + "/gatehouse/opt-demo/resolve/main/config.json",
            headers={"Authorization": f"Bearer {grant.stdout.split()[-1]}"}), timeout=30)
        assert config.headers["X-Repo-Commit"] and json.load(config)["model_type"] == "opt"
        assert spoofed_addresses_still_hit_the_per_address_login_limit(base)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=90)
    assert "Stopped." in log.read_text()
    assert processes_with(f"GATEHOUSE_VAR_DIR={tmp_path / 'var'}") == []
