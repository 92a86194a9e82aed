import pytest

from f5worker.models.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    build_manifest,
    is_complete,
    read_manifest,
    safe_relpath,
    write_manifest,
)


def test_round_trip_and_completeness(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    (tmp_path / ".hidden").write_text("lock")
    manifest = build_manifest(tmp_path, "m", {"kind": "test"})
    assert [f.path for f in manifest.files] == ["a.bin", "sub/b.txt"]
    assert manifest.total_bytes == 8
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert is_complete(tmp_path, manifest)
    (tmp_path / "a.bin").write_bytes(b"abcd")
    assert not is_complete(tmp_path, manifest)
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temp file left behind


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "manifest.json"])
def test_unsafe_paths_are_rejected(path):
    with pytest.raises(ManifestError):
        safe_relpath(path)


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"model": "m"}',
        '{"model": "m", "files": [{"path": "../x", "size": 1, "sha256": "a"}]}',
        '{"model": "m", "files": [{"path": "x", "size": "big", "sha256": "a"}]}',
    ],
)
def test_malformed_manifests_are_rejected(text):
    with pytest.raises(ManifestError):
        Manifest.from_json(text)


def test_missing_manifest_reads_as_none(tmp_path):
    assert read_manifest(tmp_path) is None
    assert Manifest("m", (FileEntry("x", 1, "ab"),)).total_bytes == 1
