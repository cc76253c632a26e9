"""Download clients generated with the manifest inside them."""

import json
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "client_templates"


def _fill(template: str, manifest: dict, **values: str) -> str:
    text = (TEMPLATES / template).read_text()
    for key, value in {"RELEASE": manifest["release"], "VARIANT": manifest["variant"],
                       "EXPIRES_AT": manifest["expires_at"], **values}.items():
        text = text.replace(f"__{key}__", value)
    return text


def render_shell_client(manifest: dict) -> str:
    rows = "\n".join(f"{f['url']}\t{f['path']}\t{f['size']}\t{f['sha256']}" for f in manifest["files"])
    return _fill("download.sh", manifest, MANIFEST_TSV=rows)


def render_python_client(manifest: dict, manifest_url: str) -> str:
    as_json = json.dumps(manifest, indent=1).replace('"""', '\\"\\"\\"')
    return _fill("gatehouse_download.py", manifest, MANIFEST_JSON=as_json, MANIFEST_URL=manifest_url)
