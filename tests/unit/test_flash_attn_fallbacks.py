"""FLASH_ATTN=auto|off|require: every path to a backend, with a fake pip (no installs here).

The real pip path, against a local HTTP server and a throwaway venv, is in
tests/integration/test_flash_attn_install.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pytest

from f5worker.startup.flash_attn import FlashAttnUnavailable, TorchBuild, bake, ensure_flash_attn

GPU_BUILD = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=True)
NO_GPU = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=False)
CPU_TORCH = TorchBuild("2.4.0+cpu", None, False, "cp311", "linux_x86_64", cuda_available=False)
NEW_TORCH = TorchBuild("2.9.0+cu128", "12.8", True, "cp311", "linux_x86_64", cuda_available=True)
UNDEFINED = (
    "ImportError: flash_attn_2_cuda.so: undefined symbol: "
    "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
)
SELECTED = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"


@dataclass
class FakePip:
    """Records what would have been installed; fails where told to."""

    install_error: str | None = None
    verify_error: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def install(self, url: str) -> None:
        self.calls.append(("install", url))
        if self.install_error:
            raise OSError(self.install_error)

    def verify(self) -> str | None:
        self.calls.append(("verify", ""))
        return self.verify_error

    def uninstall(self) -> None:
        self.calls.append(("uninstall", ""))


def probe_of(torch_build: TorchBuild):
    return lambda: torch_build


def never_probed() -> TorchBuild:
    raise AssertionError("DEVICE=cpu must not even read torch")


def absent() -> str:
    return "not installed"


def records(caplog, level):
    return [
        r for r in caplog.records if r.name == "f5worker.startup.flash_attn" and r.levelno == level
    ]


@pytest.fixture(autouse=True)
def _capture(caplog):
    caplog.set_level(logging.INFO, logger="f5worker.startup.flash_attn")


def test_off_skips_everything(caplog):
    pip = FakePip()
    outcome = ensure_flash_attn("off", probe=never_probed, pip=pip, check_present=absent)
    assert (outcome.backend, outcome.status) == ("torch", "off")
    assert pip.calls == [] and not records(caplog, logging.WARNING)


@pytest.mark.parametrize(
    ("device", "probe", "reason"),
    [
        ("cpu", never_probed, "DEVICE=cpu"),
        ("auto", probe_of(NO_GPU), "no CUDA device for torch 2.4.0+cu124"),
        ("auto", probe_of(CPU_TORCH), "no CUDA device for torch 2.4.0+cpu"),
    ],
)
def test_auto_without_a_gpu_skips_quickly_with_one_info_line(caplog, device, probe, reason):
    pip = FakePip()
    started = time.perf_counter()
    outcome = ensure_flash_attn("auto", device=device, probe=probe, pip=pip, check_present=absent)
    assert time.perf_counter() - started < 0.1
    assert (outcome.backend, outcome.status, outcome.detail) == ("torch", "no-cuda", reason)
    assert pip.calls == []
    assert not records(caplog, logging.WARNING)
    assert [r.getMessage() for r in records(caplog, logging.INFO)] == [
        f"flash-attn: skipped ({reason}), torch attention"
    ]


@pytest.mark.parametrize(("device", "probe"), [("cpu", never_probed), ("auto", probe_of(NO_GPU))])
def test_require_without_a_gpu_fails_start_up(device, probe):
    with pytest.raises(FlashAttnUnavailable) as info:
        ensure_flash_attn(
            "require", device=device, probe=probe, pip=FakePip(), check_present=absent
        )
    assert info.value.code == "FLASH_ATTN_UNAVAILABLE" and info.value.fatal


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_a_loading_install_is_used_as_is(caplog, mode):
    pip = FakePip()
    outcome = ensure_flash_attn(
        mode, probe=probe_of(GPU_BUILD), pip=pip, check_present=lambda: None
    )
    assert (outcome.backend, outcome.status) == ("flash_attn", "present")
    assert pip.calls == [] and not records(caplog, logging.WARNING)


def test_missing_package_installs_the_selected_wheel_and_verifies_it(caplog):
    pip = FakePip()
    outcome = ensure_flash_attn("auto", probe=probe_of(GPU_BUILD), pip=pip, check_present=absent)
    assert (outcome.backend, outcome.status, outcome.detail) == (
        "flash_attn",
        "installed",
        SELECTED,
    )
    assert [c[0] for c in pip.calls] == ["install", "verify"]
    assert pip.calls[0][1].endswith("/v2.7.4.post1/" + SELECTED)
    assert not records(caplog, logging.WARNING)


def test_broken_install_is_replaced(caplog):
    pip = FakePip()
    outcome = ensure_flash_attn(
        "auto", probe=probe_of(GPU_BUILD), pip=pip, check_present=lambda: UNDEFINED
    )
    assert outcome.status == "installed"
    assert [c[0] for c in pip.calls] == ["install", "verify"]


def test_wheel_url_overrides_the_selection():
    pip = FakePip()
    url = f"https://mirror.example/wheels/{SELECTED}"
    outcome = ensure_flash_attn(
        "auto", url, probe=probe_of(NEW_TORCH), pip=pip, check_present=absent
    )
    assert outcome.status == "installed" and pip.calls[0] == ("install", url)


FAILURES = [
    # (torch, how pip fails, what the reason must say, whether the wheel is removed again)
    (NEW_TORCH, {}, "no known flash-attn release has a wheel for torch 2.9", False),
    (GPU_BUILD, {"install_error": "pip install failed: 404"}, "install failed", False),
    (
        GPU_BUILD,
        {"verify_error": UNDEFINED},
        "torch/ABI mismatch: wheel built for torch 2.4 cxx11abi=FALSE, running torch 2.4.0+cu124",
        True,
    ),
    (GPU_BUILD, {"verify_error": "ImportError: libcuda.so.1"}, "does not load", True),
]


@pytest.mark.parametrize(("torch_build", "failing", "reason", "removed"), FAILURES)
def test_auto_falls_back_with_exactly_one_warning(caplog, torch_build, failing, reason, removed):
    pip = FakePip(**failing)
    outcome = ensure_flash_attn("auto", probe=probe_of(torch_build), pip=pip, check_present=absent)
    assert (outcome.backend, outcome.status) == ("torch", "fallback")
    assert reason in outcome.detail
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert ("uninstall", "") in pip.calls if removed else ("uninstall", "") not in pip.calls


@pytest.mark.parametrize(("torch_build", "failing", "reason", "removed"), FAILURES)
def test_require_fails_with_the_same_reason(torch_build, failing, reason, removed):
    pip = FakePip(**failing)
    with pytest.raises(FlashAttnUnavailable, match="FLASH_ATTN=require") as info:
        ensure_flash_attn("require", probe=probe_of(torch_build), pip=pip, check_present=absent)
    assert reason in info.value.message
    assert ("uninstall", "") in pip.calls if removed else ("uninstall", "") not in pip.calls


@pytest.mark.parametrize(
    ("choice", "torch_build", "failing", "status", "installs"),
    [
        ("auto", CPU_TORCH, {}, 0, []),  # nothing to bake for a CPU torch
        ("auto", NO_GPU, {}, 0, ["install", "verify"]),  # no GPU needed at build time
        ("auto", NEW_TORCH, {}, 1, []),
        ("auto", NO_GPU, {"verify_error": UNDEFINED}, 1, ["install", "verify", "uninstall"]),
        ("https://x/y.whl", NO_GPU, {}, 0, ["install", "verify"]),
    ],
)
def test_bake_at_image_build_time(choice, torch_build, failing, status, installs):
    pip = FakePip(**failing)
    assert bake(choice, pip=pip, probe=probe_of(torch_build)) == status
    assert [c[0] for c in pip.calls] == installs
