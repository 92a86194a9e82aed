"""Quality presets: names, step counts on upstream's pruned schedule, and who wins."""

import pytest

from f5worker.errors import InvalidInput
from f5worker.job.schema import parse_request
from f5worker.presets import DEFAULT_QUALITY, PRESETS, QUALITIES, resolve


def test_presets_are_the_published_step_counts():
    assert QUALITIES == ("fast", "balanced", "best")
    assert [PRESETS[q].nfe_step for q in QUALITIES] == [7, 16, 32]
    assert DEFAULT_QUALITY == "best"
    assert PRESETS["fast"].max_ref_seconds < PRESETS["best"].max_ref_seconds == 12.0


def test_fast_and_balanced_get_upstreams_pruned_schedule_and_best_the_uniform_grid():
    torch = pytest.importorskip("torch")
    from f5_tts.model.utils import get_epss_timesteps

    for quality in ("fast", "balanced"):
        n = PRESETS[quality].nfe_step
        t = get_epss_timesteps(n, device="cpu", dtype=torch.float32)
        assert len(t) == n + 1 and not torch.allclose(t, torch.linspace(0, 1, n + 1))
        # pruned: a subset of the 32-step grid that keeps the early steps
        assert torch.allclose(t * 32, (t * 32).round()) and t[1] <= 2 / 32
    t = get_epss_timesteps(32, device="cpu", dtype=torch.float32)
    assert torch.allclose(t, torch.linspace(0, 1, 33))


@pytest.mark.parametrize(
    ("quality", "nfe_step", "default", "expected"),
    [
        (None, None, "best", ("best", 32)),
        (None, None, "fast", ("fast", 7)),
        ("balanced", None, "fast", ("balanced", 16)),
        ("fast", 20, "best", ("fast", 20)),  # an explicit nfe_step wins
        (None, 4, "balanced", ("balanced", 4)),
    ],
)
def test_resolve(quality, nfe_step, default, expected):
    preset, steps = resolve(quality, nfe_step, default)
    assert (preset.name, steps) == expected


def test_quality_in_the_request():
    assert parse_request({"text": "Hi.", "quality": " Fast "}).quality == "fast"
    req = parse_request({"text": "Hi."})
    assert (req.quality, req.nfe_step) == (None, None)
    with pytest.raises(InvalidInput, match="quality must be one of fast, balanced, best"):
        parse_request({"text": "Hi.", "quality": "ultra"})
    with pytest.raises(InvalidInput, match="quality must be a string"):
        parse_request({"text": "Hi.", "quality": 7})
