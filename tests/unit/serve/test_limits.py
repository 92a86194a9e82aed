"""Result items cut to fit RunPod's yields (serve/limits.py)."""

from __future__ import annotations

import json

import pytest

from f5worker.serve.limits import MAX_YIELD_BYTES, fit_item, join_parts


@pytest.mark.parametrize("size", [0, 1, 699_999, 700_000, 700_001, 2_100_003, 5_000_000])
def test_fit_item_cuts_audio_into_parts_that_decode_back(size):
    audio = ("QUJD" * (size // 4 + 1))[:size]
    item = {"audio_base64": audio, "chunk": 2, "chunks": 5, "format": "wav", "segments": []}
    parts = fit_item(item)
    assert all(len(json.dumps(p)) + 4_096 <= MAX_YIELD_BYTES for p in parts)
    assert "".join(p["audio_base64"] for p in parts) == audio
    assert all(len(p["audio_base64"]) % 4 == 0 for p in parts[:-1])
    if len(parts) > 1:
        assert [p["part"] for p in parts] == list(range(len(parts)))
        assert {p["parts"] for p in parts} == {len(parts)} and parts[0]["segments"] == []
        assert all(p["chunk"] == 2 and "segments" not in p for p in parts[1:])
    else:
        assert parts == [item]


def test_join_parts_restores_each_item():
    big = {"audio_base64": "QUJD" * 400_000, "chunk": 0, "segments": [1]}
    small = {"audio_base64": "QUJD", "chunk": 1}
    items = [*fit_item(big), *fit_item(small), *fit_item(big | {"chunk": 2})]
    assert len(items) > 3
    assert join_parts(items) == [big, small, big | {"chunk": 2}]
