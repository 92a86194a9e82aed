"""The real install path: pip in a throwaway venv, wheels served by a local HTTP server.

The wheels are built here: a pure-python `flash_attn` whose `flash_attn_2_cuda` either imports or
raises the undefined-symbol ImportError a wheel built for another torch/C++ ABI raises. They carry
release-style names, so selection, download, the fresh-interpreter check and the uninstall on
failure all run for real. The project venv is never modified.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from container.fake_flash_attn import (
    BROKEN_KERNEL,
    F5_TTS_IMPORTS,
    GOOD_KERNEL,
    make_wheel,
)
from f5worker.startup.flash_attn import (
    FlashAttnUnavailable,
    Pip,
    TorchBuild,
    bake,
    ensure_flash_attn,
)

pytestmark = pytest.mark.slow

BUILD = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=True)
SELECTED = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        return

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def wheel_server(root: Path) -> Iterator[tuple[str, list[str]]]:
    requested: list[str] = []
    handler = type("Handler", (_Handler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A throwaway venv with pip (from the interpreter's own ensurepip, offline)."""
    path = tmp_path_factory.mktemp("fa-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    return path / "bin" / "python"


@pytest.fixture
def pip(venv) -> Iterator[Pip]:
    pip = Pip(python=str(venv), timeout_s=120)
    yield pip
    with contextlib.suppress(OSError):
        pip.uninstall()


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """A release-like tree: /v{version}/{name}; tests drop the wheels they need into it."""
    root = tmp_path / "releases"
    (root / "v2.7.4.post1").mkdir(parents=True)
    with wheel_server(root) as (url, requested):
        yield url, root, requested


def installed(venv: Path) -> bool:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('flash_attn') is None)"
    return subprocess.run([str(venv), "-c", code]).returncode == 0


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "f5worker.startup.flash_attn" and r.levelno == logging.WARNING
    ]


def test_selected_wheel_is_downloaded_installed_and_proven(served, pip, venv, caplog):
    base, root, requested = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    outcome = ensure_flash_attn(
        "auto",
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
        base_url=base + "/v{version}/{name}",
    )
    assert (outcome.backend, outcome.status, outcome.detail) == (
        "flash_attn",
        "installed",
        SELECTED,
    )
    assert requested == [f"/v2.7.4.post1/{SELECTED}"]
    assert installed(venv) and pip.verify() is None
    assert warnings_of(caplog) == []


def test_undefined_symbol_is_reported_as_abi_mismatch_and_uninstalled(served, pip, venv, caplog):
    base, root, _ = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, BROKEN_KERNEL)
    outcome = ensure_flash_attn(
        "auto",
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
        base_url=base + "/v{version}/{name}",
    )
    assert (outcome.backend, outcome.status) == ("torch", "fallback")
    [warning] = warnings_of(caplog)
    assert "torch/ABI mismatch" in warning
    assert "wheel built for torch 2.4 cxx11abi=FALSE, running torch 2.4.0+cu124" in warning
    assert "std::__cxx11::basic_string" in warning  # demangled
    assert "new-ABI (cxx11abiTRUE) wheel on an old-ABI torch" in warning
    assert not installed(venv)  # f5-tts would import a broken flash_attn and fail


def test_require_with_a_broken_wheel_fails_and_leaves_nothing(served, pip, venv):
    base, root, _ = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, BROKEN_KERNEL)
    with pytest.raises(FlashAttnUnavailable, match="torch/ABI mismatch"):
        ensure_flash_attn(
            "require",
            probe=lambda: BUILD,
            pip=pip,
            check_present=pip.verify,
            base_url=base + "/v{version}/{name}",
        )
    assert not installed(venv)


def test_missing_release_asset_falls_back(served, pip, venv, caplog):
    base, _, requested = served
    outcome = ensure_flash_attn(
        "auto",
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
        base_url=base + "/v{version}/{name}",
    )
    assert outcome.status == "fallback" and "install failed" in outcome.detail
    assert requested and len(warnings_of(caplog)) == 1
    assert not installed(venv)


def test_wheel_url_override_replaces_a_broken_install(served, pip, venv, tmp_path):
    base, root, requested = served
    broken = make_wheel(tmp_path / SELECTED, BROKEN_KERNEL)
    pip.install(str(broken))  # what an image built with the wrong wheel ships
    assert pip.verify() is not None
    (root / "mirror").mkdir()
    make_wheel(root / "mirror" / SELECTED, GOOD_KERNEL)
    outcome = ensure_flash_attn(
        "auto",
        f"{base}/mirror/{SELECTED}",
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
    )
    assert outcome.status == "installed"
    assert requested == [f"/mirror/{SELECTED}"]
    assert pip.verify() is None


def test_bake_installs_the_wheel_for_the_image_torch(served, pip, venv):
    base, root, _ = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    no_gpu = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64")
    assert bake("auto", pip=pip, probe=lambda: no_gpu, base_url=base + "/v{version}/{name}") == 0
    assert pip.verify() is None


def test_stand_in_wheel_offers_what_f5_tts_imports(tmp_path, pip, venv):
    """The wheel `make container-test` bakes into its image: f5-tts must still import with it."""
    wheel = make_wheel(tmp_path / SELECTED, GOOD_KERNEL, extra=F5_TTS_IMPORTS)
    pip.install(str(wheel))
    code = (
        "from flash_attn import flash_attn_func, flash_attn_varlen_func\n"
        "from flash_attn.bert_padding import pad_input, unpad_input\n"
    )
    assert subprocess.run([str(venv), "-c", code]).returncode == 0
    assert pip.verify() is None
