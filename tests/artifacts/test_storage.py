"""The storage backends behind one interface."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from artifacts.storage import LocalStorage, StorageError, storage_for


def test_locations_pick_the_backend(tmp_path):
    storage, prefix = storage_for("s3://weights/opt-175b/fsdp")
    assert (storage.bucket, prefix) == ("weights", "opt-175b/fsdp/")
    storage, prefix = storage_for(str(tmp_path))
    assert isinstance(storage, LocalStorage) and prefix == ""
    with pytest.raises(StorageError, match="No bucket"):
        storage_for("s3:///prefix")


def test_local_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(StorageError, match="escapes"):
        LocalStorage(tmp_path).size("../../etc/passwd")


def test_cloudfront_signed_urls_when_a_distribution_is_configured(tmp_path, settings):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "cloudfront.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    settings.CLOUDFRONT_DOMAIN, settings.CLOUDFRONT_KEY_ID = "d111.cloudfront.net", "K2JCJMDEHXQW5F"
    settings.CLOUDFRONT_PRIVATE_KEY_PATH = str(pem)
    storage, _ = storage_for("s3://weights/opt")
    url = storage.presigned_url("opt/shard 0.pt", expires_in=300, download_name="shard 0.pt")
    assert url.startswith("https://d111.cloudfront.net/opt/shard%200.pt?Expires=")
    assert "Signature=" in url and "Key-Pair-Id=K2JCJMDEHXQW5F" in url
