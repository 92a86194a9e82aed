"""Shared cache directories (#11.8): a directory per version, held while in use, never changed
under a reader; symlinked or foreign cache directories refused. Against moto's in-memory S3.

A "process" here is a set of holds: flock locks belong to open file descriptions, so a hold
taken through another descriptor conflicts exactly as another process's would, and
release_all_holds() stands for a process exiting.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.model_ref import ModelRef
from f5worker.models import local_cache
from f5worker.models.local_cache import model_lock, owned_dir
from f5worker.models.manifest import build_manifest, manifest_version, read_manifest, write_manifest
from f5worker.models.ranged import RangedConfig
from f5worker.models.s3_sync import sync_models_from_s3
from f5worker.models.s3_upload import upload_models_to_s3
from f5worker.models.source import prepare_model
from f5worker.models.sources import ModelSources
from f5worker.models.store import ModelStore, release_all_holds

BUCKET = "models"
KiB = 1024
SMALL = RangedConfig(part_size=64 * KiB, concurrency=4, read_size=16 * KiB)


def files_for(tag: str) -> dict[str, bytes]:
    """A model whose every file differs by tag, with the same names (the dangerous case)."""
    seed = hashlib.sha256(tag.encode()).digest()
    return {
        "model.safetensors": seed * (100 * KiB // 32),
        "vocab.txt": f"{tag}\n".encode(),
        "vocos/config.yaml": f"tag: {tag}\n".encode(),
        "model.json": b"{}\n",
    }


@pytest.fixture(autouse=True)
def fresh_holds() -> Iterator[None]:
    release_all_holds()
    yield
    release_all_holds()


def settings_for(cache: Path, prefix: str = "f5-tts", model: str = "m1") -> Settings:
    return Settings(
        model_name=model,
        model_cache_dir=cache,
        s3_bucket=BUCKET,
        s3_prefix=prefix,
        aws_region="us-east-1",
    )


def publish(tmp_path: Path, s3, tag: str, prefix: str = "f5-tts") -> str:
    """Upload model m1 with files_for(tag) under prefix; returns its version."""
    src = tmp_path / f"src-{prefix}-{tag}"
    for rel, data in files_for(tag).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    write_manifest(src, build_manifest(src, "m1", {"kind": "test", "tag": tag}))
    return upload(settings_for(tmp_path / "up", prefix), src, client=s3).version


M1 = ModelRef("m1", "m1", "m1")  # a cache-only model: no hub source


def sync(settings: Settings, s3, **kw):
    return sync_models_from_s3(
        ModelSources.from_settings(settings), settings.model_name, client=s3, ranges=SMALL, **kw
    )


def upload(settings: Settings, model_dir: Path, **kw):
    s3 = ModelSources.from_settings(settings).s3
    return upload_models_to_s3(s3, settings.model_name, model_dir, **kw)


def no_s3(cache: Path) -> ModelSources:
    """The model sources of a worker with cache as MODEL_CACHE_DIR and no S3 cache."""
    return ModelSources.from_settings(Settings(model_cache_dir=cache))


def load(model_dir: Path) -> dict[str, bytes]:
    """What an engine load reads: every file the manifest names, checked against it."""
    manifest = read_manifest(model_dir)
    assert manifest is not None, f"{model_dir} lost its manifest"
    out = {}
    for entry in manifest.files:
        data = (model_dir / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.path
        out[entry.path] = data
    return out


def held_elsewhere(hold_dir: Path, version: str) -> int:
    """A shared hold on version through a descriptor of its own: another process's hold."""
    fd = os.open(hold_dir / f".{version}.hold", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


# --- several endpoints, several versions, one volume ------------------------------------------


def test_two_endpoints_on_one_volume_following_different_prefixes_keep_their_files(tmp_path, s3):
    publish(tmp_path, s3, "a", prefix="endpoint-a")
    publish(tmp_path, s3, "b", prefix="endpoint-b")
    cache = tmp_path / "volume"
    a = sync(settings_for(cache, "endpoint-a"), s3)
    b = sync(settings_for(cache, "endpoint-b"), s3)  # between a's sync and a's load
    assert a.model_dir != b.model_dir and a.model_dir.parent == b.model_dir.parent
    assert load(a.model_dir) == files_for("a")  # a's load, after b's sync
    again = sync(settings_for(cache, "endpoint-a"), s3)  # a's next worker: a hit, no download
    assert again.model_dir == a.model_dir and again.downloaded_bytes == 0
    assert load(b.model_dir) == files_for("b")


def test_concurrent_syncs_of_different_prefixes_never_lose_each_others_files(tmp_path, s3):
    """Threads as processes: each syncs, waits for the other's sync, then loads; 5 rounds."""
    publish(tmp_path, s3, "a", prefix="endpoint-a")
    publish(tmp_path, s3, "b", prefix="endpoint-b")
    cache = tmp_path / "volume"
    synced = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(prefix: str, tag: str) -> None:
        try:
            for _ in range(5):
                model_dir = sync(settings_for(cache, prefix), s3).model_dir
                synced.wait(30)  # the other endpoint's sync has run too
                assert load(model_dir) == files_for(tag)
                synced.wait(30)
        except BaseException as exc:
            errors.append(exc)
            synced.abort()

    threads = [
        threading.Thread(target=worker, args=args)
        for args in (("endpoint-a", "a"), ("endpoint-b", "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []


def test_a_rollout_leaves_the_version_a_live_process_holds_readable(tmp_path, s3):
    cache = tmp_path / "volume"
    publish(tmp_path, s3, "v1")
    reader = sync(settings_for(cache), s3).model_dir  # this process holds it until it exits
    for tag in ("v2", "v3", "v4"):  # latest.json moves three times; other workers sync each
        publish(tmp_path, s3, tag)
        time.sleep(0.02)
        ModelStore(cache, "m1").release(sync(settings_for(cache), s3).version)
    assert load(reader) == files_for("v1")
    versions = cache / "m1" / "versions"
    assert (cache / "m1" / "current").read_text().strip() == manifest_version(
        read_manifest(tmp_path / "src-f5-tts-v4")
    )
    # v2 was neither held, current nor among the two most recently used: pruned.
    kept = sorted(p.name for p in versions.iterdir() if not p.name.startswith("."))
    assert len(kept) == 3 and reader.name in kept


def test_pruning_keeps_current_the_two_most_recent_and_every_held_version(tmp_path, s3):
    cache = tmp_path / "volume"
    versions = cache / "m1" / "versions"
    made = []
    for tag in ("v1", "v2", "v3", "v4", "v5"):
        publish(tmp_path, s3, tag)
        made.append(sync(settings_for(cache), s3).version)
        if tag == "v1":
            other = held_elsewhere(versions, made[0])  # a live worker serving v1
        release_all_holds()  # the syncing worker exits
        time.sleep(0.02)  # distinct "last used" times
    try:
        present = sorted(p.name for p in versions.iterdir() if not p.name.startswith("."))
        assert present == sorted([made[0], made[3], made[4]])
        assert load(versions / made[0]) == files_for("v1")
    finally:
        os.close(other)
    # v1's worker exited: the next sync prunes it; nothing else left behind.
    sync(settings_for(cache), s3)
    assert sorted(p.name for p in versions.iterdir() if not p.name.startswith(".")) == sorted(
        made[3:]
    )
    hidden = [p.name for p in versions.iterdir() if p.name.startswith(".")]
    assert sorted(hidden) == sorted(f".{v}.hold" for v in made[3:])


def test_nothing_is_pruned_by_a_process_that_went_on_without_the_model_lock(tmp_path, s3):
    cache = tmp_path / "volume"
    versions = []
    for tag in ("v1", "v2", "v3", "v4"):
        publish(tmp_path, s3, tag)
        versions.append(sync(settings_for(cache), s3).version)
        release_all_holds()
    names = sorted(p.name for p in (cache / "m1/versions").iterdir() if p.name[0] != ".")
    assert len(names) == 2  # pruned down to the two most recent, current among them
    publish(tmp_path, s3, "v5")
    with model_lock(cache, "m1"):  # another process holds the lock; this one gives up waiting
        sync(settings_for(cache), s3, lock_timeout=0)
    after = sorted(p.name for p in (cache / "m1/versions").iterdir() if p.name[0] != ".")
    assert len(after) == 3 and set(names) < set(after)


def test_a_short_disk_prunes_unheld_old_versions_first(tmp_path, s3):
    cache = tmp_path / "volume"
    publish(tmp_path, s3, "v1")
    first = sync(settings_for(cache), s3).version
    release_all_holds()
    publish(tmp_path, s3, "v2")
    second = sync(settings_for(cache), s3)
    held = second.model_dir
    publish(tmp_path, s3, "v3")
    # Room for v3's new bytes only once v1 (unheld, not current) is gone; v2 is held.
    versions = cache / "m1" / "versions"
    needed = sum(len(d) for k, d in files_for("v3").items() if k != "model.json")

    def free(path: Path) -> int:
        return needed - 1 if (versions / first).exists() else needed

    third = sync(settings_for(cache), s3, free_bytes=free)
    assert not (versions / first).exists() and held.is_dir()
    assert load(third.model_dir) == files_for("v3") and load(held) == files_for("v2")


# --- symlinks and ownership -------------------------------------------------------------------


def plant(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.bin").write_bytes(b"keep me")
    return outside


def test_a_symlink_at_the_cache_root_is_refused_and_nothing_outside_is_touched(tmp_path, s3):
    publish(tmp_path, s3, "a")
    outside = plant(tmp_path)
    (tmp_path / "cache").symlink_to(outside)
    before = listing(outside)
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), s3)
    assert info.value.message.startswith(f"MODEL_CACHE_DIR {tmp_path / 'cache'} is a symlink")
    with pytest.raises(StorageError, match="is a symlink"):
        prepare_model(no_s3(tmp_path / "cache"), M1)
    assert listing(outside) == before and (outside / "precious.bin").read_bytes() == b"keep me"


@pytest.mark.parametrize("where", ["m1", "m1/versions"])
def test_a_symlink_at_the_model_dir_is_refused_and_nothing_outside_is_touched(tmp_path, s3, where):
    publish(tmp_path, s3, "a")
    outside = plant(tmp_path)
    link = tmp_path / "cache" / where
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    before = listing(outside)
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), s3)
    assert f"{link} is a symlink; refusing it" in info.value.message
    with pytest.raises(StorageError, match="is a symlink"):
        prepare_model(no_s3(tmp_path / "cache"), M1)
    assert listing(outside) == before


def test_a_symlink_planted_at_the_lock_file_is_never_followed(tmp_path, s3):
    publish(tmp_path, s3, "a")
    outside = plant(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".m1.lock").symlink_to(outside / "created-through-the-link")
    with pytest.raises(StorageError, match="is a symlink; refusing to follow it"):
        sync(settings_for(tmp_path / "cache"), s3)
    assert listing(outside) == ["precious.bin"]


def test_a_planted_current_pointer_symlink_is_ignored_and_replaced_not_followed(tmp_path, s3):
    publish(tmp_path, s3, "a")
    outside = plant(tmp_path)
    home = tmp_path / "cache" / "m1"
    home.mkdir(parents=True)
    (home / "current").symlink_to(outside / "precious.bin")
    result = sync(settings_for(tmp_path / "cache"), s3)
    assert not (home / "current").is_symlink()
    assert (home / "current").read_text() == f"{result.version}\n"
    assert (outside / "precious.bin").read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another uid")
@pytest.mark.parametrize("where", ["", "m1"])
def test_a_cache_directory_owned_by_another_user_is_refused(tmp_path, s3, where):
    publish(tmp_path, s3, "a")
    foreign = tmp_path / "cache" / where
    foreign.mkdir(parents=True, exist_ok=True)
    os.chown(foreign, 4321, 4321)
    with pytest.raises(StorageError) as info:
        sync(settings_for(tmp_path / "cache"), s3)
    assert info.value.message == (
        f"{'MODEL_CACHE_DIR' if not where else 'model directory'} {foreign} is owned by "
        f"uid 4321, not by this worker's uid {os.geteuid()}; refusing it"
    )


def test_an_operators_cache_dir_under_a_symlinked_mount_is_accepted(tmp_path, s3):
    publish(tmp_path, s3, "a")
    (tmp_path / "real-volume").mkdir()
    (tmp_path / "mnt").symlink_to(tmp_path / "real-volume")
    result = sync(settings_for(tmp_path / "mnt" / "models"), s3)
    assert load(result.model_dir) == files_for("a")
    assert (tmp_path / "real-volume" / "models" / "m1" / "versions" / result.version).is_dir()


def test_owned_dir_tells_absent_from_refused(tmp_path):
    assert owned_dir(tmp_path / "nope", "x") is False
    assert owned_dir(tmp_path / "made", "x", create=True) and (tmp_path / "made").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="is not a directory"):
        owned_dir(tmp_path / "file", "x")


# --- the flat layout of older workers ---------------------------------------------------------


def flat_copy(home: Path, tag: str) -> None:
    for rel, data in files_for(tag).items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
    write_manifest(home, build_manifest(home, "m1", {"kind": "older worker"}))


def test_an_older_workers_flat_copy_is_reused_by_hash_and_left_alone(tmp_path, s3, monkeypatch):
    publish(tmp_path, s3, "a")
    home = tmp_path / "cache" / "m1"
    flat_copy(home, "a")
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    result = sync(settings_for(tmp_path / "cache"), s3)
    assert result.downloaded_bytes == 0 and result.reused_files == len(files_for("a"))
    assert load(result.model_dir) == files_for("a")
    assert {p: p.read_bytes() for p in before} == before  # nothing of the flat copy changed
    # A tampered flat file is not reused: that one file is downloaded.
    release_all_holds()
    (tmp_path / "cache" / "m1" / "versions" / result.version / "vocab.txt").unlink()
    (home / "vocab.txt").write_bytes(b"X\n")
    again = sync(settings_for(tmp_path / "cache"), s3)
    assert again.downloaded_bytes == len(files_for("a")["vocab.txt"])
    assert load(again.model_dir) == files_for("a")


def test_without_s3_an_older_workers_flat_copy_is_served_as_a_version(tmp_path):
    home = tmp_path / "cache" / "m1"
    flat_copy(home, "a")
    prepared = prepare_model(
        no_s3(tmp_path / "cache"),
        M1,
        fetch=lambda s, n, d: pytest.fail("fetched"),
    )
    assert prepared.origin == "local" and prepared.model_dir.parent == home / "versions"
    assert load(prepared.model_dir) == files_for("a")
    assert (home / "current").read_text().strip() == prepared.model_dir.name


def test_a_hub_fetch_lands_in_a_version_dir_and_the_next_start_serves_it(tmp_path):
    fetched = []

    def fetch(sources: ModelSources, name: str, dest: Path) -> Path:
        fetched.append(dest)
        flat_copy(dest, "hub")
        return dest

    sources = no_s3(tmp_path / "cache")
    first = prepare_model(sources, M1, fetch=fetch)
    assert first.origin == "hub" and first.model_dir.parent == tmp_path / "cache/m1/versions"
    assert not fetched[0].exists()  # the staging dir became the version
    release_all_holds()
    second = prepare_model(sources, M1, fetch=lambda s, n, d: pytest.fail("fetched again"))
    assert (second.origin, second.model_dir) == ("local", first.model_dir)
    assert load(second.model_dir) == files_for("hub")


# --- the store's own bookkeeping --------------------------------------------------------------


def test_a_crashed_staging_dir_is_removed_a_live_one_kept(tmp_path):
    models = ModelStore(tmp_path / "cache", "m1")
    with models.staging() as live:
        (live / "part.bin").write_bytes(b"x")
        dead = models.versions / ".staging-dead"
        dead.mkdir()
        (dead / "old.bin").write_bytes(b"x")
        os.utime(dead / "old.bin", (0, 0))
        os.utime(dead, (0, 0))
        orphan_lock = models.versions / ".staging-gone.lock"
        orphan_lock.write_text("")
        trash = models.versions / ".trash-v0-1234"
        trash.mkdir()
        models.prune()
        assert live.is_dir() and not dead.exists() and not trash.exists()
        assert not orphan_lock.exists()
    assert not live.exists()


def test_prune_removes_only_versions_nobody_holds(tmp_path):
    models = ModelStore(tmp_path / "cache", "m1")
    models.create()
    (models.versions / "v1").mkdir()
    models.point("v0")
    assert models.prune(keep=0) == ["v1"]  # unheld: pruned
    (models.versions / "v1").mkdir()
    models.hold("v1")
    assert models.prune(keep=0) == [] and (models.versions / "v1").is_dir()
    models.release("v1")
    assert models.prune(keep=0) == ["v1"]


def test_pointers_are_plain_files_switched_by_rename(tmp_path):
    models = ModelStore(tmp_path / "cache", "m1")
    models.create()
    assert models.pointer() is None
    models.point("abc", "current", "current.s3-x")
    assert models.pointer() == models.pointer("current.s3-x") == "abc"
    (models.home / "current").write_text("../../etc\n")
    assert models.pointer() is None  # not a version name: ignored


def test_sha256_is_not_recomputed_for_recorded_files_of_other_versions(tmp_path, s3, monkeypatch):
    publish(tmp_path, s3, "a")
    cache = tmp_path / "cache"
    sync(settings_for(cache), s3)
    files = {**files_for("a"), "vocab.txt": b"changed\n"}
    src = tmp_path / "src2"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    write_manifest(src, build_manifest(src, "m1", {"kind": "test"}))
    upload(settings_for(tmp_path / "up"), src, client=s3)

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(local_cache, "sha256_file", no_hashing)
    result = sync(settings_for(cache), s3)
    assert result.downloaded_bytes == len(b"changed\n")
    assert json.loads((result.model_dir / ".verified.json").read_text())["files"].keys() == set(
        files
    )
    # The links moved the old version's ctimes; its record followed, so going back to it
    # re-hashes nothing either.
    old = manifest_version(read_manifest(tmp_path / "src-f5-tts-a"))
    s3.put_object(
        Bucket=BUCKET, Key="f5-tts/m1/latest.json", Body=json.dumps({"version": old}).encode()
    )
    back = sync(settings_for(cache), s3)
    assert (back.version, back.downloaded_bytes, back.reused_files) == (old, 0, len(files))
