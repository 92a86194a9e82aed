"""GPU tests: marked `gpu`, and skipped, with the reason, where CUDA is not available."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    here = Path(__file__).parent
    no_cuda = pytest.mark.skip(reason="needs CUDA; torch.cuda.is_available() is False")
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(no_cuda)


@pytest.fixture(scope="session")
def gpu_engine(demo_model_dir: Path):
    from f5worker.engine.f5tts import F5TTSEngine

    return F5TTSEngine.load(demo_model_dir, device="cuda")
