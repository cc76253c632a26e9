"""The web process never imports torch; only the engine (run by workers and the CLI) does.

It may import ``tokenizers``: it counts prompt tokens with the release's own tokenizer.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB_PROCESS = """
import sys
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns  # every URLconf, view, API and serializer module
import portal.asgi, portal.wsgi, portal.celery
from django.core.management import get_commands
import inference_worker.tokenization, inference_worker.release_model  # the web side's tokenizer
heavy = sorted(name for name in ("torch", "transformers", "safetensors") if name in sys.modules)
print("heavy:", heavy)
"""


def test_the_web_process_does_not_import_torch():
    result = subprocess.run([sys.executable, "-c", WEB_PROCESS], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("heavy: []")
