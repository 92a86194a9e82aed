"""Audio helpers: cross-fading chunks."""

import numpy as np
import pytest

from f5worker.audio import cross_fade


def test_cross_fade_lengths_and_continuity():
    a, b = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    out = cross_fade([a, b], sample_rate=1000, seconds=0.1)
    assert len(out) == 2000 - 100
    assert out[899] == pytest.approx(1.0) and out[1000] == pytest.approx(0.0)
    assert np.all(np.diff(out[900:1000]) <= 0)
    assert len(cross_fade([a, b], 1000, 0.0)) == 2000
    assert len(cross_fade([a], 1000, 0.1)) == 1000 and len(cross_fade([], 1000, 0.1)) == 0
