"""FLASH_ATTN=auto|off|require: every path to a backend, with a fake pip (no installs here).

The real pip path, against a local HTTP server and a throwaway venv, is in
tests/integration/test_flash_attn_install.py.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, field

import pytest

from f5worker.errors import ConfigError
from f5worker.startup import flash_attn
from f5worker.startup.flash_attn import FlashAttnUnavailable, bake, ensure_flash_attn
from f5worker.startup.flash_attn_wheels import TorchBuild, select_wheel

GPU_BUILD = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=True)
NO_GPU = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=False)
CPU_TORCH = TorchBuild("2.4.0+cpu", None, False, "cp311", "linux_x86_64", cuda_available=False)
NEW_TORCH = TorchBuild("2.9.0+cu128", "12.8", True, "cp311", "linux_x86_64", cuda_available=True)
UNDEFINED = (
    "ImportError: flash_attn_2_cuda.so: undefined symbol: "
    "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
)
SELECTED = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
PIN = "5" * 64
PINS = {SELECTED: PIN}
CUSTOM_SHA = "c" * 64


@dataclass
class FakePip:
    """Records what would have been installed; fails where told to."""

    install_error: str | None = None
    verify_error: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def install(self, url: str, sha256: str) -> None:
        self.calls.append(("install", url))
        self.hashes.append(sha256)
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
    outcome = ensure_flash_attn(
        "auto", probe=probe_of(GPU_BUILD), pip=pip, check_present=absent, pins=PINS
    )
    assert (outcome.backend, outcome.status, outcome.detail) == (
        "flash_attn",
        "installed",
        SELECTED,
    )
    assert [c[0] for c in pip.calls] == ["install", "verify"]
    assert pip.calls[0][1].endswith("/v2.7.4.post1/" + SELECTED)
    assert pip.hashes == [PIN]  # the pin goes with the wheel to the installer
    assert not records(caplog, logging.WARNING)


def test_broken_install_is_replaced(caplog):
    pip = FakePip()
    outcome = ensure_flash_attn(
        "auto", probe=probe_of(GPU_BUILD), pip=pip, check_present=lambda: UNDEFINED, pins=PINS
    )
    assert outcome.status == "installed"
    assert [c[0] for c in pip.calls] == ["install", "verify"]


def test_wheel_url_overrides_the_selection():
    pip = FakePip()
    url = f"https://mirror.example/wheels/{SELECTED}"
    outcome = ensure_flash_attn(
        "auto",
        url,
        wheel_sha256=CUSTOM_SHA.upper(),
        probe=probe_of(NEW_TORCH),
        pip=pip,
        check_present=absent,
    )
    assert outcome.status == "installed" and pip.calls[0] == ("install", url)
    assert pip.hashes == [CUSTOM_SHA]


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_unpinned_release_wheel_is_not_installed(caplog, mode):
    """No pinned sha256: not installable at run time. auto: one WARNING; require: start-up fails."""
    pip = FakePip()
    reason = f"{SELECTED} has no pinned sha256, so it is not installed at run time"
    run = functools.partial(
        ensure_flash_attn, mode, probe=probe_of(GPU_BUILD), pip=pip, check_present=absent, pins={}
    )
    if mode == "require":
        with pytest.raises(FlashAttnUnavailable, match="no pinned sha256"):
            run()
    else:
        outcome = run()
        assert (outcome.backend, outcome.status) == ("torch", "fallback")
        [warning] = records(caplog, logging.WARNING)
        assert reason in warning.getMessage() and "\n" not in warning.getMessage()
    assert pip.calls == []


def test_shipped_pins_decide_by_default():
    """Without `pins=`, the table in the repo decides: an unpinned selection installs nothing."""
    pip = FakePip()
    selected = select_wheel(GPU_BUILD)
    outcome = ensure_flash_attn("auto", probe=probe_of(GPU_BUILD), pip=pip, check_present=absent)
    if selected.sha256 is None:
        assert outcome.status == "fallback" and pip.calls == []
    else:
        assert outcome.status == "installed" and pip.hashes == [selected.sha256]


BAD_CUSTOM = [
    # (url, sha256, the variable the ConfigError names, what it says)
    (f"http://mirror.example/{SELECTED}", CUSTOM_SHA, "FLASH_ATTN_WHEEL_URL", "https"),
    (f"ftp://mirror.example/{SELECTED}", CUSTOM_SHA, "FLASH_ATTN_WHEEL_URL", "https"),
    (f"file:///wheels/{SELECTED}", CUSTOM_SHA, "FLASH_ATTN_WHEEL_URL", "https"),
    ("https://mirror.example/flash_attn-2.7.4.post1.tar.gz", CUSTOM_SHA, "URL", ".whl"),
    ("https://mirror.example/flash_attn-2.7.4.post1.zip", CUSTOM_SHA, "URL", ".whl"),
    ("https://mirror.example/flash_attn/", CUSTOM_SHA, "FLASH_ATTN_WHEEL_URL", ".whl"),
    ("https://mirror.example/a%2F..%2Fx.whl", CUSTOM_SHA, "FLASH_ATTN_WHEEL_URL", ".whl"),
    ("git+https://github.com/Dao-AILab/flash-attention", CUSTOM_SHA, "WHEEL_URL", "https"),
    (f"https://mirror.example/{SELECTED}", None, "FLASH_ATTN_WHEEL_SHA256", "required"),
    (f"https://mirror.example/{SELECTED}", "abc", "FLASH_ATTN_WHEEL_SHA256", "64 hex"),
    (f"https://mirror.example/{SELECTED}", "g" * 64, "FLASH_ATTN_WHEEL_SHA256", "64 hex"),
    (f"https://mirror.example/{SELECTED}", "sha256:" + "c" * 64, "WHEEL_SHA256", "64 hex"),
]


@pytest.mark.parametrize("mode", ["auto", "require", "off"])
@pytest.mark.parametrize(("url", "sha256", "var", "says"), BAD_CUSTOM)
def test_custom_wheel_must_be_https_whl_with_a_sha256(mode, url, sha256, var, says):
    pip = FakePip()
    with pytest.raises(ConfigError, match=re.escape(says)) as info:
        ensure_flash_attn(
            mode,
            url,
            wheel_sha256=sha256,
            probe=probe_of(GPU_BUILD),
            pip=pip,
            check_present=absent,
        )
    assert info.value.code == "CONFIG_ERROR" and var in info.value.message
    assert pip.calls == []


def test_custom_wheel_url_secrets_stay_out_of_logs_and_errors(caplog):
    signed = f"https://bucket.s3.amazonaws.com/{SELECTED}?X-Amz-Signature=s3cr3tsig#tok=s3cr3tfrag"
    pip = FakePip(install_error=f"download of {signed} failed")
    outcome = ensure_flash_attn(
        "auto",
        signed,
        wheel_sha256=CUSTOM_SHA,
        probe=probe_of(GPU_BUILD),
        pip=pip,
        check_present=absent,
    )
    assert pip.calls[0] == ("install", signed)  # the real URL is used, only logs are cut
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"https://bucket.s3.amazonaws.com/{SELECTED}" in logged
    assert "s3cr3t" not in logged and "s3cr3t" not in outcome.detail
    with pytest.raises(ConfigError) as info:
        ensure_flash_attn("auto", signed.replace(".whl", ".tar.gz"), wheel_sha256=CUSTOM_SHA)
    assert "s3cr3t" not in info.value.message


FAILURES = [
    # (torch, how pip fails, what the reason must say, whether the wheel is removed again)
    (NEW_TORCH, {}, "no known flash-attn release has a wheel for torch 2.9", False),
    (GPU_BUILD, {"install_error": "pip install failed: 404"}, "install failed", False),
    (GPU_BUILD, {"install_error": "sha256 of x.whl is 00, expected 55: refused"}, "refused", False),
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
    outcome = ensure_flash_attn(
        "auto", probe=probe_of(torch_build), pip=pip, check_present=absent, pins=PINS
    )
    assert (outcome.backend, outcome.status) == ("torch", "fallback")
    assert reason in outcome.detail
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert ("uninstall", "") in pip.calls if removed else ("uninstall", "") not in pip.calls


@pytest.mark.parametrize(("torch_build", "failing", "reason", "removed"), FAILURES)
def test_require_fails_with_the_same_reason(torch_build, failing, reason, removed):
    pip = FakePip(**failing)
    with pytest.raises(FlashAttnUnavailable, match="FLASH_ATTN=require") as info:
        ensure_flash_attn(
            "require", probe=probe_of(torch_build), pip=pip, check_present=absent, pins=PINS
        )
    assert reason in info.value.message
    assert ("uninstall", "") in pip.calls if removed else ("uninstall", "") not in pip.calls


LOCAL_WHEEL = f"/wheels/{SELECTED}"


@pytest.mark.parametrize(
    ("choice", "sha256", "torch_build", "failing", "status", "installs"),
    [
        ("auto", None, CPU_TORCH, {}, 0, []),  # nothing to bake for a CPU torch
        ("auto", None, NO_GPU, {}, 0, ["install", "verify"]),  # no GPU needed at build time
        ("auto", None, NEW_TORCH, {}, 1, []),
        ("auto", None, NO_GPU, {"verify_error": UNDEFINED}, 1, ["install", "verify", "uninstall"]),
        ("auto", None, NO_GPU, {"install_error": "sha256 mismatch"}, 1, ["install"]),
        ("auto", CUSTOM_SHA, NO_GPU, {}, 1, []),  # auto takes its hash from the pins only
        ("https://x/y.whl", CUSTOM_SHA, NO_GPU, {}, 0, ["install", "verify"]),
        ("https://x/y.whl", None, NO_GPU, {}, 1, []),  # no hash, no install
        ("https://x/y.whl", "abc", NO_GPU, {}, 1, []),
        ("http://x/y.whl", CUSTOM_SHA, NO_GPU, {}, 1, []),
        ("https://x/flash_attn-2.7.4.post1.tar.gz", CUSTOM_SHA, NO_GPU, {}, 1, []),
        (LOCAL_WHEEL, CUSTOM_SHA, NO_GPU, {}, 0, ["install", "verify"]),  # air-gapped build
        (LOCAL_WHEEL, None, NO_GPU, {}, 1, []),
        ("/wheels/flash_attn-2.7.4.post1.tar.gz", CUSTOM_SHA, NO_GPU, {}, 1, []),
    ],
)
def test_bake_at_image_build_time(choice, sha256, torch_build, failing, status, installs):
    pip = FakePip(**failing)
    assert bake(choice, sha256, pip=pip, probe=probe_of(torch_build), pins=PINS) == status
    assert [c[0] for c in pip.calls] == installs
    if installs:
        assert pip.hashes == [PIN if choice == "auto" else CUSTOM_SHA]


def test_bake_never_installs_an_unpinned_wheel(caplog):
    """The image build uses the same rule as a start: no pin, no install. The default build
    (auto) goes on with torch attention and one WARNING, so it works before a pin is added."""
    pip = FakePip()
    assert bake("auto", pip=pip, probe=probe_of(NO_GPU), pins={}) == 0
    assert pip.calls == []
    [warning] = records(caplog, logging.WARNING)
    assert f"{SELECTED} has no pinned sha256" in warning.getMessage()
    assert "torch attention" in warning.getMessage()


@pytest.mark.parametrize(
    ("argv", "called"),
    [
        (["--bake", "auto", "--sha256", ""], ("auto", None)),  # the Dockerfile's empty build arg
        (["--bake", "/w/x.whl", "--sha256", CUSTOM_SHA], ("/w/x.whl", CUSTOM_SHA)),
        (["--bake", "https://h/x.whl"], ("https://h/x.whl", None)),
    ],
)
def test_bake_command_line(monkeypatch, argv, called):
    seen = []
    monkeypatch.setattr(flash_attn, "bake", lambda choice, sha256: seen.append((choice, sha256)))
    flash_attn.main(argv)
    assert seen == [called]
