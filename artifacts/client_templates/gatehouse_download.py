#!/usr/bin/env python3
"""Gatehouse download client for __RELEASE__ / __VARIANT__ (standard library only).

Downloads in parallel, resumes partial files, shows progress, and renames a file to its final
name only after its sha256 matches. With an API token (--token or GATEHOUSE_TOKEN) it fetches a
fresh manifest when links expire.

    python3 gatehouse_download.py [--dest DIR] [--parallel N] [--token TOKEN]
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

MANIFEST = json.loads(r"""__MANIFEST_JSON__""")
MANIFEST_URL = "__MANIFEST_URL__"
CHUNK = 1024 * 1024


class Progress:
    def __init__(self, total):
        self.total, self.done, self.lock, self.started = total, 0, threading.Lock(), time.monotonic()

    def add(self, count):
        with self.lock:
            self.done += count
            fraction = self.done / self.total if self.total else 1.0
            rate = self.done / max(time.monotonic() - self.started, 1e-6) / 1e6
            bar = "#" * int(fraction * 30)
            sys.stderr.write(f"\r[{bar:<30}] {fraction:6.1%} {self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {rate:,.1f} MB/s")
            sys.stderr.flush()


class LinkRefused(Exception):
    def __init__(self, status, detail):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fresh_links(token):
    request = urllib.request.Request(MANIFEST_URL, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return {entry["path"]: entry["url"] for entry in json.load(response)["files"]}


def fetch(url, part, size, progress):
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > size:
        os.remove(part)
        have = 0
    if have == size:
        return
    headers = {"Accept": "application/octet-stream", "User-Agent": "gatehouse_download.py"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as error:
        raise LinkRefused(error.code, error.read(500).decode("utf-8", "replace")) from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start again
        progress.add(have)
        with open(part, "ab" if have else "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                progress.add(len(chunk))


def download(entry, dest, progress, links, token, attempts=5):
    target = os.path.join(dest, entry["path"])
    part = target + ".part"
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if os.path.exists(target) and sha256_of(target) == entry["sha256"]:
        progress.add(entry["size"])
        return f"ok       {entry['path']} (already verified)"
    for attempt in range(1, attempts + 1):
        try:
            fetch(links[entry["path"]], part, entry["size"], progress)
            break
        except LinkRefused as refused:
            if refused.status in (403, 410) and token:
                links.update(fresh_links(token))
                continue
            hint = {410: "links expired: use --token or download a fresh client",
                    429: "download limit reached; resuming later is allowed"}.get(refused.status, "see My access")
            raise RuntimeError(f"{entry['path']}: {refused} ({hint})") from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            if attempt == attempts:
                raise RuntimeError(f"{entry['path']}: {error}") from None
            time.sleep(min(2 ** attempt, 30))
    if sha256_of(part) != entry["sha256"]:
        os.remove(part)
        raise RuntimeError(f"{entry['path']}: sha256 mismatch; the partial file was removed, run again")
    os.replace(part, target)
    return f"ok       {entry['path']}"


def main():
    parser = argparse.ArgumentParser(description=f"Download {MANIFEST['release']} / {MANIFEST['variant']}")
    parser.add_argument("--dest", default=f"./{MANIFEST['release']}-{MANIFEST['variant']}")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--token", default=os.environ.get("GATEHOUSE_TOKEN", ""), help="API token to refresh links")
    args = parser.parse_args()
    files = MANIFEST["files"]
    links = {entry["path"]: entry["url"] for entry in files}
    progress = Progress(sum(entry["size"] for entry in files))
    failures = []
    with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        futures = [pool.submit(download, entry, args.dest, progress, links, args.token) for entry in files]
        for future in as_completed(futures):
            try:
                message = future.result()
                sys.stderr.write("\r" + " " * 90 + "\r" + message + "\n")
            except RuntimeError as error:
                failures.append(str(error))
                sys.stderr.write(f"\rfailed   {error}\n")
    sys.stderr.write("\n")
    if failures:
        sys.stderr.write(f"{len(failures)} file(s) not downloaded; run again to resume.\n")
        return 1
    print(f"All {len(files)} files downloaded and verified in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
