"""S3 primitives (download, upload, conditional put) against moto's in-memory S3."""

import hashlib

import boto3
import pytest
from botocore.exceptions import ClientError

import f5worker.s3 as f5s3
from f5worker.errors import StorageError
from f5worker.s3 import (
    delete_if_match,
    download_from_s3,
    exists,
    make_client,
    put_if_absent,
    read_object,
    upload_to_s3,
)

BUCKET = "models"


def test_upload_then_download_verified(s3, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    upload_to_s3(s3, src, BUCKET, "a/src.bin")
    dest = tmp_path / "out" / "dest.bin"
    digest = hashlib.sha256(b"x" * 1000).hexdigest()
    assert download_from_s3(s3, BUCKET, "a/src.bin", dest, size=1000, sha256=digest) == dest
    assert dest.read_bytes() == b"x" * 1000
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest.bin"]


@pytest.mark.parametrize(("size", "sha"), [(999, None), (1000, "0" * 64)])
def test_mismatch_leaves_no_file(s3, tmp_path, size, sha):
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"y" * 1000)
    dest = tmp_path / "dest.bin"
    with pytest.raises(StorageError) as info:
        download_from_s3(s3, BUCKET, "k", dest, size=size, sha256=sha)
    assert info.value.message.startswith("s3://models/k: ")
    assert "expected 999 bytes" in info.value.message or "sha256" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_mismatch_keeps_the_previous_good_file(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"new")
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    with pytest.raises(StorageError):
        download_from_s3(s3, BUCKET, "k", dest, sha256="0" * 64)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["dest.bin"]


def test_missing_key_and_bucket_are_coded_errors(s3, tmp_path):
    with pytest.raises(StorageError) as info:
        download_from_s3(s3, BUCKET, "nope", tmp_path / "x")
    assert info.value.code == "STORAGE_ERROR" and "s3://models/nope" in info.value.message
    with pytest.raises(StorageError):
        upload_to_s3(s3, tmp_path / "missing-file", BUCKET, "k")
    src = tmp_path / "f"
    src.write_bytes(b"1")
    with pytest.raises(StorageError) as info:
        upload_to_s3(s3, src, "no-such-bucket", "k")
    assert "NoSuchBucket" in info.value.message
    assert "testing-secret" not in info.value.message
    assert list(p.name for p in tmp_path.iterdir()) == ["f"]


def test_custom_endpoint_relaxes_checksums():
    client = make_client(
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="a",
        secret_access_key="b",
    )
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"
    assert boto3  # default AWS clients keep boto3's own checksum defaults


class ConditionalStore:
    """moto's client, with the answers given queued for the conditional PUTs."""

    def __init__(self, client, answers: list[tuple[str, int]]) -> None:
        self.client, self.answers = client, answers
        self.conditional_puts = 0

    def put_object(self, **kw):
        if "IfNoneMatch" in kw:
            self.conditional_puts += 1
            if self.answers:
                code, status = self.answers.pop(0)
                error = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
                raise ClientError(error, "PutObject")
        return self.client.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_put_if_absent_412_is_a_lost_race(s3):
    store = ConditionalStore(s3, [("PreconditionFailed", 412)])
    assert put_if_absent(store, BUCKET, "k", b"mine", "text/plain") is False
    assert store.conditional_puts == 1 and not exists(s3, BUCKET, "k")


def test_put_if_absent_retries_a_409_conflict(s3, monkeypatch):
    monkeypatch.setattr(f5s3, "CONFLICT_BACKOFF_S", 0.0)
    conflict = ("ConditionalRequestConflict", 409)
    store = ConditionalStore(s3, [conflict, conflict])
    assert put_if_absent(store, BUCKET, "k", b"mine", "text/plain") is True
    assert store.conditional_puts == 3 and read_object(s3, BUCKET, "k", 10) == b"mine"


def test_put_if_absent_gives_up_after_repeated_conflicts(s3, monkeypatch):
    monkeypatch.setattr(f5s3, "CONFLICT_BACKOFF_S", 0.0)
    store = ConditionalStore(s3, [("ConditionalRequestConflict", 409)] * 10)
    with pytest.raises(StorageError) as info:
        put_if_absent(store, BUCKET, "k", b"mine", "text/plain")
    assert info.value.retryable and "ConditionalRequestConflict" in info.value.message
    assert store.conditional_puts == f5s3.CONFLICT_RETRIES + 1 and not exists(s3, BUCKET, "k")


def test_put_if_absent_without_conditional_writes_checks_then_puts(s3):
    store = ConditionalStore(s3, [("NotImplemented", 501)] * 2)
    assert put_if_absent(store, BUCKET, "k", b"first", "text/plain") is True
    assert put_if_absent(store, BUCKET, "k", b"second", "text/plain") is False
    assert read_object(s3, BUCKET, "k", 10) == b"first"


def test_put_if_absent_on_moto_honours_if_none_match(s3):
    assert put_if_absent(s3, BUCKET, "k", b"first", "text/plain") is True
    assert put_if_absent(s3, BUCKET, "k", b"second", "text/plain") is False
    assert read_object(s3, BUCKET, "k", 10) == b"first"


class NoConditionalDelete:
    """A store that answers If-Match on DELETE with 501."""

    def __init__(self, client) -> None:
        self.client = client

    def delete_object(self, **kw):
        if "IfMatch" in kw:
            error = {
                "Error": {"Code": "NotImplemented"},
                "ResponseMetadata": {"HTTPStatusCode": 501},
            }
            raise ClientError(error, "DeleteObject")
        return self.client.delete_object(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_delete_if_match(s3):
    first = s3.put_object(Bucket=BUCKET, Key="k", Body=b"1")["ETag"]
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"2")
    assert delete_if_match(s3, BUCKET, "k", first) is False and exists(s3, BUCKET, "k")
    current = s3.head_object(Bucket=BUCKET, Key="k")["ETag"]
    assert delete_if_match(s3, BUCKET, "k", current) is True and not exists(s3, BUCKET, "k")
    assert delete_if_match(s3, BUCKET, "k", current) is True  # already gone


def test_delete_if_match_without_conditional_deletes_deletes(s3):
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"1")
    assert delete_if_match(NoConditionalDelete(s3), BUCKET, "k", '"other"') is True
    assert not exists(s3, BUCKET, "k")
