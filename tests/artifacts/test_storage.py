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


def test_our_presigned_urls_are_the_ones_botocore_makes(settings):
    import datetime
    from unittest import mock

    from artifacts.storage import S3Storage, sigv4_presigned_get

    settings.S3_ENDPOINT_URL, settings.S3_REGION = "http://127.0.0.1:8333", "us-east-1"
    settings.S3_ACCESS_KEY_ID, settings.S3_SECRET_ACCESS_KEY = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    storage = S3Storage("weights")
    key = "opt-175b/part 0/checkpoint_last-model_part-0-shard0.pt"
    disposition = "attachment; filename*=UTF-8''checkpoint%20shard.pt"
    frozen = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen.replace(tzinfo=None)):
        theirs = storage.client.generate_presigned_url(
            "get_object", Params={"Bucket": "weights", "Key": key, "ResponseContentDisposition": disposition},
            ExpiresIn=300)
    ours = sigv4_presigned_get(endpoint="http://127.0.0.1:8333", region="us-east-1", bucket="weights", key=key,
                               access_key_id="AKIDEXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                               expires_in=300, query={"response-content-disposition": disposition}, now=frozen)
    assert ours.split("?")[0] == theirs.split("?")[0]
    assert sorted(ours.split("?")[1].split("&")) == sorted(theirs.split("?")[1].split("&"))


def test_absolute_keys_and_symlinks_out_of_the_root_are_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a weight")
    (root / "link.pt").symlink_to(outside / "secret")
    storage = LocalStorage(root)
    for key in ("/etc/passwd", "link.pt", "../outside/secret"):
        with pytest.raises(StorageError, match="escapes the storage root"):
            storage.open(key)
        with pytest.raises(StorageError, match="escapes the storage root"):
            storage.presigned_url(key, expires_in=60, download_name="x")
