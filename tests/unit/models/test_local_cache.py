"""The local side of the cache: the hashing download sink, the model lock, the verified record."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f5worker.errors import StorageError
from f5worker.models.local_cache import (
    check_free_space,
    inspect,
    load_record,
    model_lock,
    record_all,
    remove_stale_temps,
)
from f5worker.models.manifest import build_manifest
from f5worker.models.ranged import HashingSink

DATA = bytes(range(256)) * 40  # 10240 bytes


def write_pieces(tmp_path, pieces: list[tuple[int, bytes]]) -> tuple[HashingSink, bytes]:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    sink = HashingSink(fd)
    try:
        for offset, data in pieces:
            sink.write_at(offset, data)
        sink.hexdigest()  # finish hashing while the fd is open
        return sink, (tmp_path / "f").read_bytes()
    finally:
        os.close(fd)


def split(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(i, data[i : i + size]) for i in range(0, len(data), size)]


@settings(max_examples=60, deadline=None)
@given(piece=st.integers(256, 4000), data=st.data())
def test_sink_hashes_out_of_order_and_repeated_pieces(tmp_path_factory, piece, data):
    """Any arrival order, with retried pieces written twice, hashes to the file's sha256."""
    parts = split(DATA, piece)
    pieces = [parts[i] for i in data.draw(st.permutations(range(len(parts))))]
    repeats = data.draw(st.lists(st.integers(0, len(parts) - 1), max_size=5))
    pieces += [parts[i] for i in repeats]
    sink, written = write_pieces(tmp_path_factory.mktemp("sink"), pieces)
    assert written == DATA
    assert sink.size == len(DATA) and not sink.inconsistent
    assert sink.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_sink_hashes_pieces_written_by_many_threads_at_once(tmp_path):
    data = os.urandom(4 * 1024 * 1024 + 3)
    pieces = split(data, 64 * 1024)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        sink = HashingSink(fd)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda piece: sink.write_at(*piece), reversed(pieces)))
        assert sink.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize(
    ("pieces", "digest", "inconsistent"),
    [
        ([(0, DATA[:100]), (200, DATA[200:300])], None, False),  # a gap: never complete
        ([(0, DATA[:100]), (0, b"X" * 100)], "any", True),  # a retry that brought other bytes
        ([(100, DATA[100:200]), (0, DATA[:150])], hashlib.sha256(DATA[:200]).hexdigest(), False),
    ],
)
def test_sink_reports_gaps_and_changed_rewrites(tmp_path, pieces, digest, inconsistent):
    sink, _ = write_pieces(tmp_path, pieces)
    assert sink.inconsistent is inconsistent
    if digest != "any":
        assert sink.hexdigest() == digest


def test_lock_excludes_a_second_holder_then_times_out_to_unlocked(tmp_path, caplog):
    with model_lock(tmp_path, "m") as first:
        assert first is True
        fd = os.open(tmp_path / ".m.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        now, polls = [100.0], []

        def sleep(seconds: float) -> None:  # a fake clock: waiting only moves it on
            polls.append(seconds)
            now[0] += seconds

        with (
            caplog.at_level(logging.INFO, logger="f5worker.models.local_cache"),
            model_lock(
                tmp_path, "m", timeout=0.3, poll=0.05, clock=lambda: now[0], sleep=sleep
            ) as second,
        ):
            assert second is False
        waited = now[0] - 100.0  # the timeout, give or take one poll (floats add up unevenly)
        assert set(polls) == {0.05} and 0.3 <= waited <= 0.35 + 1e-9
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0][0] == "INFO" and "waiting up to 0 s" in messages[0][1]
    assert messages[-1] == (
        "WARNING",
        f"model lock {tmp_path}/.m.lock still held after 0 s; proceeding without it",
    )
    with model_lock(tmp_path, "m", timeout=0) as again:
        assert again is True  # released on exit


def test_free_space_check_names_path_needed_and_free(tmp_path):
    check_free_space(tmp_path, 10, lambda p: 10)
    with pytest.raises(StorageError) as info:
        check_free_space(tmp_path, 11, lambda p: 10)
    assert (
        info.value.message == f"not enough disk space in {tmp_path}: need 11 bytes, 10 bytes free"
    )


def test_record_vouches_until_the_file_changes(tmp_path):
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "b").write_bytes(b"two")
    manifest = build_manifest(tmp_path, "m", {})
    record_all(tmp_path, manifest)
    record = load_record(tmp_path)
    assert inspect(tmp_path, manifest.files, record, hasher=_forbidden).missing == ()
    (tmp_path / "b").write_bytes(b"TWO")
    seen = []
    state = inspect(tmp_path, manifest.files, record, hasher=lambda p: seen.append(p.name) or "x")
    assert seen == ["b"] and [f.path for f in state.missing] == ["b"] and "b" not in record
    (tmp_path / "a").unlink()
    state = inspect(tmp_path, manifest.files, record, hasher=lambda p: "x")
    assert [f.path for f in state.missing] == ["a", "b"] and state.hashed_bytes == 3


def test_a_damaged_record_only_costs_a_rehash(tmp_path):
    (tmp_path / "a").write_bytes(b"one")
    manifest = build_manifest(tmp_path, "m", {})
    (tmp_path / ".verified.json").write_text("{not json")
    record = load_record(tmp_path)
    state = inspect(tmp_path, manifest.files, record)
    assert state.missing == () and state.hashed_bytes == 3 and "a" in record


def test_stale_temp_files_are_removed_fresh_ones_kept(tmp_path):
    old = tmp_path / "sub" / ".x.bin.abc.part"
    old.parent.mkdir()
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".y.bin.def.part"
    fresh.write_bytes(b"in progress")
    assert remove_stale_temps(tmp_path) == 1
    assert not old.exists() and fresh.exists()


def _forbidden(path):
    raise AssertionError(f"hashed {path}")
