"""sync_models_from_s3 / upload_models_to_s3 against moto's in-memory S3 (issue #3)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from f5worker.config import Settings
from f5worker.errors import ConfigError, StorageError
from f5worker.models import local_cache, s3_upload
from f5worker.models.manifest import (
    FileEntry,
    Manifest,
    build_manifest,
    manifest_version,
    read_manifest,
    write_manifest,
)
from f5worker.models.ranged import RangedConfig
from f5worker.models.s3_sync import sync_models_from_s3
from f5worker.models.s3_upload import UploadResult, upload_models_to_s3
from f5worker.models.sources import ModelSources
from f5worker.models.store import release_all_holds
from f5worker.s3 import make_client

BUCKET = "models"
SECRET = "moto-secret-never-shown"
KiB = 1024
# Small parts so a 600 KiB file takes several ranged GETs on several threads.
SMALL = RangedConfig(part_size=128 * KiB, concurrency=4, read_size=32 * KiB)
FILES = {
    "model.safetensors": os.urandom(600 * KiB + 7),
    "vocab.txt": b"a\nb\nc\n",
    "vocos/config.yaml": b"sample_rate: 24000\n",
    "vocos/pytorch_model.bin": os.urandom(200 * KiB),
    "model.json": b"{}\n",
}


@pytest.fixture(autouse=True)
def fresh_holds():
    """Each test is a fresh process as far as version holds go."""
    release_all_holds()
    yield
    release_all_holds()


def settings_for(cache: Path, model: str = "m1", **kw) -> Settings:
    return Settings(
        model_name=model, model_cache_dir=cache, s3_bucket=BUCKET, aws_region="us-east-1", **kw
    )


def make_model(path: Path, files: dict[str, bytes] = FILES, model: str = "m1", **source) -> Path:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    write_manifest(path, build_manifest(path, model, {"kind": "test", **source}))
    return path


def sync(settings: Settings, s3, **kw):
    return sync_models_from_s3(
        ModelSources.from_settings(settings), settings.model_name, client=s3, ranges=SMALL, **kw
    )


def upload(settings: Settings, model_dir: Path, **kw) -> UploadResult:
    """upload_models_to_s3 of settings' S3 cache and model."""
    s3 = ModelSources.from_settings(settings).s3
    return upload_models_to_s3(s3, settings.model_name, model_dir, **kw)


def published(tmp_path: Path, s3, files: dict[str, bytes] = FILES) -> Settings:
    """A bucket that holds `files` as model m1; returns settings with an empty cache dir."""
    upload(settings_for(tmp_path / "uploader"), make_model(tmp_path / "src", files), client=s3)
    return settings_for(tmp_path / "cache")


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def temp_files(path: Path) -> list[Path]:
    return [p for p in path.rglob(f"*{local_cache.TEMP_SUFFIX}")] if path.exists() else []


def keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_layout_is_model_version_files_manifest_and_pointer(tmp_path, s3):
    result = upload(settings_for(tmp_path), make_model(tmp_path / "src"), client=s3)
    version = manifest_version(read_manifest(tmp_path / "src"))
    assert result.committed and result.version == version and len(version) == 16
    base = f"f5-tts/m1/{version}/"
    assert keys(s3) == sorted(
        [base + p for p in [*FILES, "manifest.json"]] + ["f5-tts/m1/latest.json"]
    )
    pointer = s3.get_object(Bucket=BUCKET, Key="f5-tts/m1/latest.json")["Body"].read()
    assert json.loads(pointer) == {"model": "m1", "version": version}


def test_version_is_a_content_address():
    files = (FileEntry("b", 2, "0" * 64), FileEntry("a", 1, "1" * 64))
    one = Manifest("m", files, {"kind": "hub", "revision": "x"})
    two = Manifest("m", tuple(reversed(files)), {"kind": "other"})
    changed = Manifest("m", (FileEntry("b", 2, "2" * 64), files[1]))
    assert manifest_version(one) == manifest_version(two) != manifest_version(changed)


def test_miss_writes_nothing(tmp_path, s3):
    result = sync(settings_for(tmp_path / "cache"), s3)
    assert (result.status, result.version) == ("miss", None)
    assert result.model_dir == tmp_path / "cache" / "m1"
    assert not result.model_dir.exists()


def test_cold_sync_then_warm_sync_rehashes_nothing(tmp_path, s3, monkeypatch):
    settings = published(tmp_path, s3)
    cold = sync(settings, s3)
    assert cold.hit and cold.downloaded_bytes == sum(map(len, FILES.values()))
    assert tree(cold.model_dir) == {
        **FILES,
        "manifest.json": (tmp_path / "src/manifest.json").read_bytes(),
    }
    assert temp_files(cold.model_dir) == []

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(local_cache, "sha256_file", no_hashing)
    warm = sync(settings, s3)
    assert warm.hit and warm.downloaded_bytes == 0 and warm.reused_files == len(FILES)


def tamper_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def tamper_and_forge_mtime(path: Path) -> None:
    st = path.stat()
    tamper_same_size(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves


@pytest.mark.parametrize("tamper", [tamper_same_size, tamper_and_forge_mtime])
def test_local_file_tampered_at_same_size_is_downloaded_again(tmp_path, s3, tamper):
    settings = published(tmp_path, s3)
    model_dir = sync(settings, s3).model_dir
    tamper(model_dir / "vocos/pytorch_model.bin")
    again = sync(settings, s3)
    assert again.downloaded_bytes == len(FILES["vocos/pytorch_model.bin"])
    assert again.reused_files == len(FILES) - 1
    assert (model_dir / "vocos/pytorch_model.bin").read_bytes() == FILES["vocos/pytorch_model.bin"]


def test_missing_local_manifest_is_restored_without_downloads(tmp_path, s3):
    settings = published(tmp_path, s3)
    model_dir = sync(settings, s3).model_dir
    (model_dir / "manifest.json").unlink()
    again = sync(settings, s3)
    assert again.downloaded_bytes == 0 and (model_dir / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"x" * 204800, "{key}: sha256 does not match the manifest"),
        (b"x" * 153600, "download {key} failed: object is 153600 bytes, the manifest says 204800"),
        (b"x" * 300000, "download {key} failed: object is 300000 bytes, the manifest says 204800"),
    ],
)
def test_remote_corruption_is_rejected_and_replaces_nothing(tmp_path, s3, body, message):
    settings = published(tmp_path, s3)
    version = manifest_version(read_manifest(tmp_path / "src"))
    key = f"f5-tts/m1/{version}/vocos/pytorch_model.bin"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    model_dir = settings.model_cache_dir / "m1"
    (model_dir / "vocos").mkdir(parents=True)
    (model_dir / "vocos/pytorch_model.bin").write_bytes(b"previous good file")
    with pytest.raises(StorageError) as info:
        sync(settings, s3)
    assert info.value.message == message.format(key=f"s3://{BUCKET}/{key}")
    assert (model_dir / "vocos/pytorch_model.bin").read_bytes() == b"previous good file"
    assert temp_files(model_dir) == [] and not (model_dir / "manifest.json").exists()


def put_manifest(s3, manifest: Manifest | str, version: str = "v1") -> None:
    text = manifest if isinstance(manifest, str) else manifest.to_json()
    s3.put_object(Bucket=BUCKET, Key=f"f5-tts/m1/{version}/manifest.json", Body=text.encode())
    s3.put_object(Bucket=BUCKET, Key="f5-tts/m1/latest.json", Body=json.dumps({"version": version}))


@pytest.mark.parametrize("path", ["../escaped.bin", "/etc/evil", "a/../../escaped.bin"])
def test_manifest_path_escaping_the_cache_dir_is_rejected(tmp_path, s3, path):
    entry = {"path": path, "size": 1, "sha256": "0" * 64}
    put_manifest(s3, json.dumps({"model": "m1", "files": [entry]}))
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), s3)
    assert "unsafe path in manifest" in info.value.message
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_manifest_path_through_a_symlink_out_of_the_cache_is_rejected(tmp_path, s3):
    outside = tmp_path / "outside"
    outside.mkdir()
    version_dir = tmp_path / "cache" / "m1" / "versions" / "v1"
    version_dir.mkdir(parents=True)
    (version_dir / "sub").symlink_to(outside)
    s3.put_object(Bucket=BUCKET, Key="f5-tts/m1/v1/sub/x.bin", Body=b"x")
    put_manifest(s3, Manifest("m1", (FileEntry("sub/x.bin", 1, "0" * 64),)))
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), s3)
    assert info.value.message == f"manifest path 'sub/x.bin' escapes {version_dir}"
    assert list(outside.iterdir()) == []


def test_a_symlink_in_the_flat_layout_of_older_workers_is_never_followed(tmp_path, s3):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.bin").write_bytes(b"x")
    flat = tmp_path / "cache" / "m1"
    flat.mkdir(parents=True)
    (flat / "sub").symlink_to(outside)
    entry = FileEntry("sub/x.bin", 1, hashlib.sha256(b"x").hexdigest())
    write_manifest(flat, Manifest("m1", (entry,)))
    s3.put_object(Bucket=BUCKET, Key="f5-tts/m1/v1/sub/x.bin", Body=b"x")
    put_manifest(s3, Manifest("m1", (entry,)))
    result = sync(settings_for(tmp_path / "cache"), s3)
    assert result.downloaded_bytes == 1  # not linked from outside the cache
    assert (result.model_dir / "sub").is_dir() and not (result.model_dir / "sub").is_symlink()
    assert os.stat(outside / "x.bin").st_nlink == 1 and list(outside.iterdir()) == [
        outside / "x.bin"
    ]


def test_not_enough_disk_fails_before_any_byte_is_written(tmp_path, s3):
    settings = published(tmp_path, s3)
    with pytest.raises(StorageError) as info:
        sync(settings, s3, free_bytes=lambda path: 1000)
    model_dir = settings.model_cache_dir / "m1"
    needed = sum(map(len, FILES.values()))
    assert info.value.message == (
        f"not enough disk space in {model_dir}: need {needed} bytes, 1000 bytes free"
    )
    assert [p for p in model_dir.rglob("*")] == []


def test_s3_unreachable_uses_a_complete_local_copy_with_a_warning(tmp_path, s3, caplog):
    settings = published(tmp_path, s3)
    sync(settings, s3)
    dead = make_client("http://127.0.0.1:9", "us-east-1", "k", SECRET, max_attempts=1)
    with caplog.at_level(logging.WARNING, logger="f5worker.models.s3_sync"):
        result = sync(settings, dead)
    assert result.status == "local" and result.reused_files == len(FILES)
    [record] = caplog.records
    assert "S3 model cache unavailable" in record.getMessage()
    assert "s3://models/f5-tts/m1/latest.json" in record.getMessage()


def test_s3_unreachable_without_a_local_copy_is_a_coded_error(tmp_path):
    dead = make_client("http://127.0.0.1:9", "us-east-1", "k", SECRET, max_attempts=1)
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), dead)
    assert info.value.code == "STORAGE_ERROR"
    assert info.value.message == (
        "read s3://models/f5-tts/m1/latest.json failed: EndpointConnectionError"
    )
    assert SECRET not in str(info.value)


def test_new_version_downloads_only_changed_files_into_its_own_directory(tmp_path, s3):
    settings = published(tmp_path, s3)
    old_dir = sync(settings, s3).model_dir
    old_tree = tree(old_dir)
    files = {k: v for k, v in FILES.items() if k != "vocab.txt"}
    files["vocos/config.yaml"] = b"sample_rate: 22050\n"
    upload(settings_for(tmp_path / "up2"), make_model(tmp_path / "src2", files), client=s3)
    result = sync(settings, s3)
    assert result.downloaded_bytes == len(files["vocos/config.yaml"])
    assert result.model_dir == tmp_path / "cache" / "m1" / "versions" / result.version
    # The new version holds no stale file; the old one, still held, lost nothing.
    assert tree(result.model_dir) == {
        **files,
        "manifest.json": (tmp_path / "src2/manifest.json").read_bytes(),
    }
    assert tree(old_dir) == old_tree
    # Unchanged files are hard links, not copies.
    old, new = old_dir / "model.safetensors", result.model_dir / "model.safetensors"
    assert os.stat(old).st_ino == os.stat(new).st_ino
    assert (tmp_path / "cache" / "m1" / "current").read_text() == f"{result.version}\n"


def test_pointer_missing_or_stale_falls_back_to_the_newest_listed_version(tmp_path, s3):
    settings = published(tmp_path, s3)
    version = manifest_version(read_manifest(tmp_path / "src"))
    s3.delete_object(Bucket=BUCKET, Key="f5-tts/m1/latest.json")
    assert sync(settings, s3).version == version
    s3.put_object(Bucket=BUCKET, Key="f5-tts/m1/latest.json", Body=b'{"version": "gone"}')
    s3.put_object(Bucket=BUCKET, Key="f5-tts/m1/half-uploaded/model.json", Body=b"{}")
    assert sync(settings, s3).version == version


def test_manifest_of_another_model_is_rejected(tmp_path, s3):
    put_manifest(s3, Manifest("other", ()))
    with pytest.raises(StorageError, match="describes model 'other', not 'm1'"):
        sync(settings_for(tmp_path / "cache"), s3)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_unsafe_model_names_are_config_errors(tmp_path, s3, name):
    with pytest.raises(ConfigError):
        sync(settings_for(tmp_path, model=name), s3)


def test_upload_of_an_existing_version_changes_nothing(tmp_path, s3):
    settings = published(tmp_path, s3)
    before = {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(s3)}
    again = upload(settings, tmp_path / "src", client=s3)
    assert not again.committed and again.uploaded_bytes == 0
    assert {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(s3)} == before


def test_second_uploader_loses_the_manifest_race_cleanly(tmp_path, s3, monkeypatch):
    first = make_model(tmp_path / "a", uploader="A")
    second = make_model(tmp_path / "b", uploader="B")
    assert upload(settings_for(tmp_path), first, client=s3).committed
    # B checked for the manifest before A committed it, so it goes on to upload.
    real_exists = s3_upload.exists
    monkeypatch.setattr(
        s3_upload,
        "exists",
        lambda c, b, k: False if k.endswith("manifest.json") else real_exists(c, b, k),
    )
    result = upload(settings_for(tmp_path), second, client=s3)
    assert not result.committed
    key = f"f5-tts/m1/{result.version}/manifest.json"
    remote = Manifest.from_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert remote.source["uploader"] == "A"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "has no manifest.json; nothing to upload"),
        (lambda d: tamper_same_size(d / "vocab.txt"), "does not match its manifest; not uploading"),
        (lambda d: (d / "manifest.json").write_text("{"), "malformed manifest"),
    ],
)
def test_upload_refuses_an_incomplete_or_damaged_dir(tmp_path, s3, damage, message):
    model_dir = make_model(tmp_path / "src")
    damage(model_dir)
    with pytest.raises(StorageError, match=message):
        upload(settings_for(tmp_path), model_dir, client=s3)
    assert keys(s3) == []


def test_upload_errors_name_bucket_and_key_never_credentials(tmp_path, s3):
    model_dir = make_model(tmp_path / "src")
    settings = Settings(model_name="m1", s3_bucket="no-such-bucket", model_cache_dir=tmp_path)
    with pytest.raises(StorageError) as info:
        upload(settings, model_dir, client=s3)
    version = manifest_version(read_manifest(model_dir))
    assert info.value.message == (
        f"upload s3://no-such-bucket/f5-tts/m1/{version}/model.json failed: NoSuchBucket"
    )
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in info.value.message


def test_empty_prefix_puts_models_at_the_bucket_root(tmp_path, s3):
    settings = settings_for(tmp_path / "cache", s3_prefix="")
    upload(settings, make_model(tmp_path / "src"), client=s3)
    assert "m1/latest.json" in keys(s3)
    assert sync(settings, s3).hit


# --- an upload sends exactly the bytes that were hashed ---------------------------------------

MiB = 1024 * 1024
# Parts of S3's minimum size, so a 12 MiB file goes up in three.
PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)


def assert_nothing_committed(s3) -> None:
    assert [k for k in keys(s3) if k.endswith(("manifest.json", "latest.json"))] == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_file_replaced_between_hash_and_upload_is_not_committed(
    tmp_path, s3, monkeypatch, caplog
):
    model_dir = make_model(tmp_path / "src")
    real_verify = s3_upload.verify_local_copy

    def verify_then_replace(directory, manifest):
        ok = real_verify(directory, manifest)
        replacement = directory / ".replacement"
        replacement.write_bytes(b"z" * len(FILES["vocab.txt"]))
        os.replace(replacement, directory / "vocab.txt")  # the same size, other bytes
        return ok

    monkeypatch.setattr(s3_upload, "verify_local_copy", verify_then_replace)
    with (
        caplog.at_level(logging.ERROR, logger="f5worker.models.s3_upload"),
        pytest.raises(StorageError) as info,
    ):
        upload(settings_for(tmp_path), model_dir, client=s3)
    version = manifest_version(read_manifest(model_dir))
    key = f"f5-tts/m1/{version}/vocab.txt"
    assert info.value.message == (
        f"upload s3://{BUCKET}/{key} aborted: {model_dir / 'vocab.txt'} no longer matches its "
        "manifest (changed after it was hashed); nothing committed"
    )
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert key not in keys(s3)  # the replaced bytes never reached S3
    assert_nothing_committed(s3)


def test_a_file_rewritten_during_a_multipart_upload_is_aborted_and_not_committed(
    tmp_path, s3, monkeypatch
):
    big = os.urandom(12 * MiB)
    model_dir = make_model(tmp_path / "src", {**FILES, "model.safetensors": big})
    real_read = s3_upload._read
    reads = []

    def read_then_rewrite(fd, size):
        data = real_read(fd, size)
        if size != PARTS.multipart_chunksize:
            return data  # a whole small file
        reads.append(len(data))
        if len(reads) == 1:  # rewritten in place once its first part has been read and sent
            with open(model_dir / "model.safetensors", "r+b") as fh:
                fh.seek(11 * MiB)
                fh.write(b"\0" * 1024)
        return data

    monkeypatch.setattr(s3_upload, "_read", read_then_rewrite)
    with pytest.raises(StorageError, match="no longer matches its manifest"):
        upload(settings_for(tmp_path), model_dir, client=s3, transfer=PARTS)
    version = manifest_version(read_manifest(model_dir))
    assert reads[:3] == [5 * MiB, 5 * MiB, 2 * MiB]  # read in parts, the first sent unchanged
    assert f"f5-tts/m1/{version}/model.safetensors" not in keys(s3)
    assert_nothing_committed(s3)


def test_a_multipart_upload_round_trips(tmp_path, s3):
    files = {**FILES, "model.safetensors": os.urandom(12 * MiB + 3)}
    model_dir = make_model(tmp_path / "src", files)
    result = upload(settings_for(tmp_path), model_dir, client=s3, transfer=PARTS)
    assert result.committed and result.uploaded_bytes == sum(map(len, files.values()))
    synced = sync(settings_for(tmp_path / "cache"), s3)
    assert tree(synced.model_dir) == tree(model_dir)


def test_a_file_that_grew_after_it_was_hashed_is_not_uploaded(tmp_path, s3, monkeypatch):
    model_dir = make_model(tmp_path / "src")
    real_verify = s3_upload.verify_local_copy

    def verify_then_append(directory, manifest):
        ok = real_verify(directory, manifest)
        with open(directory / "model.json", "ab") as fh:
            fh.write(b" ")
        return ok

    monkeypatch.setattr(s3_upload, "verify_local_copy", verify_then_append)
    with pytest.raises(StorageError, match=r"model\.json no longer matches its manifest"):
        upload(settings_for(tmp_path), model_dir, client=s3)
    assert_nothing_committed(s3)


def test_a_failed_part_aborts_the_multipart_upload_and_commits_nothing(tmp_path, s3, monkeypatch):
    model_dir = make_model(tmp_path / "src", {**FILES, "model.safetensors": os.urandom(12 * MiB)})
    real_upload_part = s3.upload_part

    def failing_part(**kwargs):
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("reset by the test")
        return real_upload_part(**kwargs)

    monkeypatch.setattr(s3, "upload_part", failing_part)
    with pytest.raises(StorageError) as info:
        upload(settings_for(tmp_path), model_dir, client=s3, transfer=PARTS)
    version = manifest_version(read_manifest(model_dir))
    key = f"f5-tts/m1/{version}/model.safetensors"
    assert info.value.message == f"upload s3://{BUCKET}/{key} failed: ConnectionResetError"
    assert key not in keys(s3)
    assert_nothing_committed(s3)
