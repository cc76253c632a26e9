"""Configuration from the environment and the production security checklist."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "HTTPS": "1",
    "BEHIND_PROXY": "1",
    "ALLOWED_HOSTS": "gatehouse.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://gatehouse.example.org",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "HTTPS", "DEBUG"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_production_configuration_passes_check_deploy_with_no_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_flags_a_missing_secret_key_and_plain_http():
    result = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="0")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "portal.W001" in output
    assert "portal.W002" in output


def test_a_malformed_boolean_setting_fails_with_a_clear_message():
    result = manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_the_connection_pool_serves_queries_when_enabled(db):
    from tests.browser import database_url_of_the_test_db

    result = manage("shell", "-c", "from django.db import connection; c = connection.cursor(); c.execute('SELECT 1');"
                    " print('pool' in connection.settings_dict['OPTIONS'], c.fetchone()[0])",
                    DATABASE_POOL="1", DATABASE_URL=database_url_of_the_test_db())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True 1")


def test_every_variable_the_settings_read_is_in_the_configuration_table():
    import re

    read = re.compile(r'(?:os\.environ\.get|os\.getenv|env_bool|env_int|env_list)\(\s*"([A-Z][A-Z0-9_]*)"')
    names = {name for file in ("portal/settings.py", "portal/gunicorn.conf.py")
             for name in read.findall((ROOT / file).read_text())}
    table = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(
        line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `"))))
    assert len(names) > 60, "the pattern no longer finds the settings"
    assert sorted(names - documented) == []
