"""docker-compose.yml is valid and every command it runs exists in the project."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_ENV = {
    "SECRET_KEY": "x" * 60,
    "POSTGRES_PASSWORD": "postgres-password",
    "S3_ACCESS_KEY_ID": "access",
    "S3_SECRET_ACCESS_KEY": "secret",
    "PORTAL_HOST": "gatehouse.example.org",
}


def compose_config(**env: str) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "docker-compose (Debian package) is installed by `make test`"
    environment = {key: value for key, value in os.environ.items() if key not in COMPOSE_ENV}
    environment.update(env)
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    result = compose_config(**COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_production_topology_has_every_service(services):
    assert set(services) >= {"postgres", "redis", "s3", "web", "downloads", "worker", "beat", "gpu-worker"}
    for name in ("postgres", "redis", "s3", "web", "downloads", "worker", "gpu-worker"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    # Download redirects run on sync workers with one persistent connection each.
    assert "--worker-class=sync" in services["downloads"]["command"]
    assert services["downloads"]["environment"]["DATABASE_POOL"] == "0"


def seconds(duration: str) -> float:
    """A compose duration such as "1m30s" in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_the_gpu_worker_serves_one_release_and_drains_before_docker_kills_it(services):
    gpu = services["gpu-worker"]
    command = gpu["command"]
    assert command[:3] == ["python", "-m", "inference_worker.worker"]
    assert dict(zip(command[3::2], command[4::2])) == {
        "--release": "opt-175b", "--checkpoint": "/models/opt", "--tp": "8", "--device": "cuda", "--dtype": "float16"}
    assert gpu["environment"]["INFERENCE_RELEASE"] == "opt-175b"  # what its healthcheck looks for
    assert seconds(gpu["stop_grace_period"]) > float(gpu["environment"]["PLAYGROUND_DRAIN_SECONDS"])
    assert gpu["shm_size"]  # NCCL between the ranks
    # Each job thread holds its own database connection for the whole job.
    assert gpu["environment"]["DATABASE_POOL"] == "0"
    # Web-side playground tasks (beat) go to the queue the default worker consumes.
    assert "--queues=default" in services["worker"]["command"]


def test_the_release_and_tensor_parallel_degree_come_from_the_environment():
    result = compose_config(**COMPOSE_ENV, INFERENCE_RELEASE="opt-66b", INFERENCE_TP_DEGREE="2")
    assert result.returncode == 0, result.stderr
    gpu = yaml.safe_load(result.stdout)["services"]["gpu-worker"]
    options = dict(zip(gpu["command"][3::2], gpu["command"][4::2]))
    assert (options["--release"], options["--tp"]) == ("opt-66b", "2")
    assert gpu["environment"]["INFERENCE_RELEASE"] == "opt-66b"


def test_the_gpu_worker_is_healthy_only_while_its_own_worker_heartbeats(services):
    from inference_worker.worker.runtime import WorkerRuntime

    kind, *healthcheck = services["gpu-worker"]["healthcheck"]["test"]
    assert kind == "CMD" and healthcheck[0] == "python"
    release = "compose-healthcheck"

    def healthy() -> bool:
        result = subprocess.run([sys.executable, *healthcheck[1:]], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env={**os.environ, "INFERENCE_RELEASE": release})
        assert result.returncode in (0, 1), result.stderr
        return result.returncode == 0

    engine = SimpleNamespace(max_batch=16, tokenizer=None)  # what the runtime reads of an engine before any job
    elsewhere = WorkerRuntime(engine, release=release, tp=8, device="cuda", dtype="float16", load_seconds=1.0,
                              worker_id=f"{release}-another-host-1")
    here = WorkerRuntime(engine, release=release, tp=8, device="cuda", dtype="float16", load_seconds=1.0)
    try:
        elsewhere.heartbeat()
        assert not healthy(), "another machine's worker made this one look healthy"
        here.heartbeat()
        assert healthy()
        here.begin_drain()  # heartbeats now say it is draining
        assert not healthy()
    finally:
        here.stop()
        elsewhere.stop()
    assert not healthy()


def test_missing_secrets_are_refused_with_the_variable_named():
    result = compose_config(**{k: v for k, v in COMPOSE_ENV.items() if k != "SECRET_KEY"})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_every_project_command_exists(services):
    for name, service in services.items():
        if "build" not in service:
            continue
        command = service["command"]
        program = command[0]
        assert (BIN / program).exists(), f"{name}: {program} is not installed by the project"
        if program == "gunicorn":
            module, _, attribute = command[1].partition(":")
            check = run(sys.executable, "-c", f"import {module}; {module}.{attribute}")
            assert check.returncode == 0, check.stderr
            config = command[command.index("--config") + 1]
            assert (ROOT / config).is_file(), f"{name}: {config} is missing"
        elif program == "celery":
            assert command[1:3] == ["-A", "portal"]
            help_text = run(str(BIN / "celery"), "-A", "portal", command[3], "--help")
            assert help_text.returncode == 0, help_text.stderr
            for option in (arg.split("=")[0] for arg in command[4:] if arg.startswith("--")):
                assert option in help_text.stdout, f"{name}: celery {command[3]} has no {option}"
        elif program == "python" and command[1] == "-m":
            help_text = run(sys.executable, "-m", command[2], "--help")
            assert help_text.returncode == 0, help_text.stderr
            for option in (arg for arg in command[3:] if arg.startswith("--")):
                assert option in help_text.stdout, f"{name}: python -m {command[2]} has no {option}"
        elif program == "python":
            assert command[1] == "manage.py"
            commands = run(sys.executable, "manage.py", "help", "--commands").stdout.split()
            assert command[2] in commands, f"{name}: manage.py has no {command[2]} command"
        else:
            pytest.fail(f"{name}: no check for {program}")


def test_seaweedfs_flags_exist_in_the_weed_binary(services):
    command = services["s3"]["command"]
    assert command[0] == "server"
    help_text = run(str(BIN / "weed"), "server", "-h")
    flags = set(re.findall(r"^\s+(-[\w.]+)", help_text.stdout + help_text.stderr, re.MULTILINE))
    for arg in command[1:]:
        assert arg.split("=")[0] in flags, f"weed server has no {arg}"


def test_the_dockerfile_builds_the_targets_and_copies_files_that_exist(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in targets, f"{name} builds a target the Dockerfile lacks"
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
