"""Where weight files live: one interface, two backends (local directory, S3-compatible).

This is the only module that imports boto3. A *location* names a place for a variant's
files: ``s3://bucket/prefix`` or an absolute local directory.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote, urlsplit

from django.conf import settings

CHUNK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class StorageError(Exception):
    """A storage operation failed; the message says what and where."""


class KeyOutsideRoot(StorageError):
    """A local key resolves (through ``..``, an absolute path or a symlink) outside the storage root."""


class Storage(Protocol):
    def list(self, prefix: str = "") -> Iterator[StoredObject]: ...
    def size(self, key: str) -> int | None: ...
    def open(self, key: str, start: int = 0) -> BinaryIO: ...
    def put_file(self, key: str, source: Path) -> None: ...
    def presigned_url(self, key: str, *, expires_in: int, download_name: str) -> str | None: ...


class LocalStorage:
    """Files under a root directory; the portal streams them itself (no presigned URLs)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        """The key's path with symlinks resolved; refused unless it stays under the root."""
        root = self.root.resolve()
        path = (root / key).resolve()
        if root not in path.parents and path != root:
            raise KeyOutsideRoot(f"Key {key!r} escapes the storage root {self.root}; it is never served.")
        return path

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            raise StorageError(f"No such directory: {base}")
        for dirpath, _, filenames in os.walk(base):
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                yield StoredObject(key=path.relative_to(self.root).as_posix(), size=path.stat().st_size)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def open(self, key: str, start: int = 0) -> BinaryIO:
        try:
            handle = open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"{key} is missing from {self.root}") from None
        handle.seek(start)
        return handle

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    def presigned_url(self, key: str, *, expires_in: int, download_name: str) -> str | None:
        """None: the portal streams local files itself, once the key is known to stay under the root."""
        self._path(key)
        return None


class S3Storage:
    """A bucket on AWS S3, SeaweedFS or MinIO; downloads go straight to it by presigned URL."""

    def __init__(self, bucket: str):
        self.bucket = bucket
        self.client = _s3_client(
            settings.S3_ENDPOINT_URL, settings.S3_REGION, settings.S3_ACCESS_KEY_ID, settings.S3_SECRET_ACCESS_KEY
        )

    def _call(self, what: str, function, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"S3 {what} failed for s3://{self.bucket}: {error}") from error

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call("create bucket", self.client.create_bucket, Bucket=self.bucket)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("list", paginator.paginate, Bucket=self.bucket, Prefix=prefix)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in pages:
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        yield StoredObject(key=item["Key"], size=item["Size"])
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"S3 list failed for s3://{self.bucket}/{prefix}: {error}") from error

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"S3 head failed for s3://{self.bucket}/{key}: {error}") from error

    def open(self, key: str, start: int = 0) -> BinaryIO:
        extra = {"Range": f"bytes={start}-"} if start else {}
        response = self._call("get", self.client.get_object, Bucket=self.bucket, Key=key, **extra)
        return response["Body"]

    def put_file(self, key: str, source: Path) -> None:
        self._call("upload", self.client.upload_file, Filename=str(source), Bucket=self.bucket, Key=key)

    def presigned_url(self, key: str, *, expires_in: int, download_name: str) -> str:
        if settings.CLOUDFRONT_DOMAIN:
            return cloudfront_signed_url(key, expires_in=expires_in)
        disposition = f"attachment; filename*=UTF-8''{quote(download_name)}"
        if settings.S3_ACCESS_KEY_ID and settings.S3_SECRET_ACCESS_KEY:
            return sigv4_presigned_get(
                endpoint=self.client.meta.endpoint_url, region=settings.S3_REGION, bucket=self.bucket, key=key,
                access_key_id=settings.S3_ACCESS_KEY_ID, secret_access_key=settings.S3_SECRET_ACCESS_KEY,
                expires_in=expires_in, query={"response-content-disposition": disposition},
            )
        return self._call(
            "presign",
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": key, "ResponseContentDisposition": disposition},
            ExpiresIn=expires_in,
        )


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint_url: str, region: str, access_key_id: str, secret_access_key: str):
    """One boto3 client per configuration (they are thread-safe and slow to create)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region,
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def _uri_encode(text: str, safe: str = "") -> str:
    return quote(text, safe="-_.~" + safe)


def sigv4_presigned_get(*, endpoint: str, region: str, bucket: str, key: str, access_key_id: str,
                        secret_access_key: str, expires_in: int, query: dict[str, str],
                        now: datetime.datetime | None = None) -> str:
    """A path-style presigned GET URL (AWS Signature Version 4, query-string auth).

    The same URL botocore makes (a test compares them), at a tenth of its cost: /dl/ makes one per
    download. Used when static keys are configured; otherwise botocore resolves credentials.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    host = urlsplit(endpoint).netloc
    path = f"/{bucket}/{_uri_encode(key, safe='/')}"
    params = {
        **query,
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key_id}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": "host",
    }
    canonical_query = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(params.items()))
    canonical_request = f"GET\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
    string_to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    signing_key = f"AWS4{secret_access_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{endpoint.rstrip('/')}{path}?{canonical_query}&X-Amz-Signature={signature}"


def cloudfront_signed_url(key: str, *, expires_in: int) -> str:
    """A CloudFront canned-policy signed URL (when a distribution fronts the bucket)."""
    from botocore.signers import CloudFrontSigner
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    private_key = serialization.load_pem_private_key(
        Path(settings.CLOUDFRONT_PRIVATE_KEY_PATH).read_bytes(), password=None
    )

    def rsa_sign(message: bytes) -> bytes:
        return private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())  # CloudFront requires SHA-1

    signer = CloudFrontSigner(settings.CLOUDFRONT_KEY_ID, rsa_sign)
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
    return signer.generate_presigned_url(f"https://{settings.CLOUDFRONT_DOMAIN}/{quote(key)}", date_less_than=expires)


def storage_for(location: str) -> tuple[Storage, str]:
    """The backend and key prefix for a location (``s3://bucket/prefix`` or ``/abs/dir``)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        if not bucket:
            raise StorageError(f"No bucket in {location!r}; expected s3://bucket/prefix.")
        prefix = prefix.strip("/")
        return S3Storage(bucket), f"{prefix}/" if prefix else ""
    path = Path(location)
    if not path.is_absolute():
        raise StorageError(f"{location!r} is neither s3://bucket/prefix nor an absolute directory.")
    return LocalStorage(path), ""


def default_location(subpath: str) -> str:
    """Where new uploads go under the configured backend (STORAGE_BACKEND)."""
    if settings.STORAGE_BACKEND == "s3":
        return f"s3://{settings.S3_BUCKET}/{subpath.strip('/')}"
    return str(Path(settings.STORAGE_LOCAL_ROOT) / subpath)


def iter_chunks(handle: BinaryIO, length: int | None = None) -> Iterator[bytes]:
    """Read ``handle`` in chunks, at most ``length`` bytes in all, closing it at the end."""
    remaining = length
    try:
        while remaining is None or remaining > 0:
            chunk = handle.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()
