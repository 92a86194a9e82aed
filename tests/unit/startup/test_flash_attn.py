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
from f5worker.startup import flash_attn, flash_attn_bake
from f5worker.startup.flash_attn import FlashAttnUnavailable, ensure_flash_attn
from f5worker.startup.flash_attn_bake import bake
from f5worker.startup.flash_attn_install import read_record
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


def test_start_up_logs_the_sha256_of_the_wheel_it_uses(caplog, monkeypatch):
    """A baked wheel: the record's sha256; a run-time install: the pinned sha256 it checked."""
    baked = {"status": "baked", "wheel": SELECTED, "sha256": PIN, "trust": "pinned"}
    monkeypatch.setattr(flash_attn, "read_record", lambda: baked)
    outcome = ensure_flash_attn("auto", probe=probe_of(GPU_BUILD), check_present=lambda: None)
    assert f"baked wheel {SELECTED} sha256 {PIN} (pinned)" in outcome.detail
    assert outcome.detail in " ".join(r.getMessage() for r in records(caplog, logging.INFO))
    monkeypatch.setattr(flash_attn, "read_record", lambda: None)
    outcome = ensure_flash_attn("auto", probe=probe_of(GPU_BUILD), check_present=lambda: None)
    assert "not baked by the image build (sha256 unknown)" in outcome.detail
    caplog.clear()
    monkeypatch.setattr(flash_attn, "use_user_site", lambda: False)
    ensure_flash_attn(
        "auto", probe=probe_of(GPU_BUILD), pip=FakePip(), check_present=absent, pins=PINS
    )
    assert f"installed {SELECTED} (sha256 {PIN})" in caplog.text


def test_a_run_time_install_as_non_root_is_importable_from_the_user_site(monkeypatch, tmp_path):
    """pip falls back to ~/.local when site-packages is read-only (the image's worker user);
    this process then needs that directory on sys.path."""
    import site
    import sys

    from f5worker.startup import flash_attn_install

    user_site = tmp_path / "site-packages"
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(user_site))
    monkeypatch.setattr(site, "ENABLE_USER_SITE", True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert flash_attn_install.use_user_site() is False  # pip installed nothing there
    user_site.mkdir()
    assert flash_attn_install.use_user_site() is True
    assert str(user_site) in sys.path
    assert flash_attn_install.use_user_site() is False  # once


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


def served(digests: dict[str, str]):
    """A stand-in for download(url, dest): the sha256 each URL's bytes have; records the URLs."""
    seen: list[str] = []

    def fetch(url: str, dest) -> str:
        seen.append(url)
        dest.write_bytes(b"wheel")
        return digests.get(url.rsplit("/", 1)[-1], PIN)

    fetch.seen = seen  # type: ignore[attr-defined]
    return fetch


def bake_records(caplog, level):
    return [r for r in caplog.records if r.name == flash_attn_bake.log.name and r.levelno == level]


@pytest.fixture
def local_wheel(monkeypatch):
    """The bake checks a local wheel file's bytes; here every local file has CUSTOM_SHA."""
    monkeypatch.setattr(flash_attn_bake, "file_sha256", lambda path: CUSTOM_SHA)


@pytest.mark.parametrize(
    ("choice", "sha256", "torch_build", "failing", "status", "installs"),
    [
        ("none", None, NO_GPU, {}, 0, []),
        ("auto", None, CPU_TORCH, {}, 0, []),  # nothing to bake for a CPU torch
        ("auto", None, NO_GPU, {}, 0, ["install", "verify"]),  # no GPU needed at build time
        ("auto", None, NEW_TORCH, {}, 1, []),
        ("auto", None, NO_GPU, {"verify_error": UNDEFINED}, 1, ["install", "verify", "uninstall"]),
        ("auto", None, NO_GPU, {"install_error": "pip failed"}, 1, ["install"]),
        ("auto", PIN, NO_GPU, {}, 0, ["install", "verify"]),  # the same pin twice is fine
        ("auto", CUSTOM_SHA, NO_GPU, {}, 1, []),  # disagrees with the table's pin
        ("https://x/y.whl", CUSTOM_SHA, NO_GPU, {}, 0, ["install", "verify"]),
        ("https://x/y.whl", None, NO_GPU, {}, 1, []),  # no hash, no install
        ("https://x/y.whl", "abc", NO_GPU, {}, 1, []),
        ("http://x/y.whl", CUSTOM_SHA, NO_GPU, {}, 1, []),
        ("https://x/flash_attn-2.7.4.post1.tar.gz", CUSTOM_SHA, NO_GPU, {}, 1, []),
        (LOCAL_WHEEL, CUSTOM_SHA, NO_GPU, {}, 0, ["install", "verify"]),  # air-gapped build
        (LOCAL_WHEEL, None, NO_GPU, {}, 1, []),
        (LOCAL_WHEEL, PIN, NO_GPU, {}, 1, []),  # its bytes are not the given sha256
        ("/wheels/flash_attn-2.7.4.post1.tar.gz", CUSTOM_SHA, NO_GPU, {}, 1, []),
    ],
)
def test_bake_at_image_build_time(
    choice, sha256, torch_build, failing, status, installs, local_wheel, tmp_path
):
    pip = FakePip(**failing)
    fetch = served({"y.whl": CUSTOM_SHA})
    record = tmp_path / "record.env"
    got = bake(
        choice, sha256, pip=pip, probe=probe_of(torch_build), pins=PINS, record=record, fetch=fetch
    )
    assert got == status
    assert [c[0] for c in pip.calls] == installs
    if installs:
        assert pip.hashes == [PIN if choice == "auto" else CUSTOM_SHA]
        assert "://" not in pip.calls[0][1]  # pip gets the checked local file, never a URL
    if status == 0:
        baked = read_record(record)
        assert baked["status"] == ("baked" if installs else "none")
        if installs:
            assert baked["sha256"] == pip.hashes[0] and baked["trust"] == "pinned"
    else:
        assert not record.exists()


def test_bake_without_a_pin_trusts_the_official_url_on_first_use(caplog, tmp_path):
    """No pin: the official https release URL's bytes are installed, and their sha256 recorded
    (trust=first-use) and logged with the command that pins them."""
    pip = FakePip()
    fetch = served({SELECTED: CUSTOM_SHA})
    record = tmp_path / "record.env"
    assert bake("auto", pip=pip, probe=probe_of(NO_GPU), pins={}, record=record, fetch=fetch) == 0
    assert fetch.seen == [select_wheel(NO_GPU, pins={}).url]
    assert fetch.seen[0].startswith("https://github.com/Dao-AILab/flash-attention/releases/")
    assert pip.hashes == [CUSTOM_SHA]
    assert read_record(record) == {
        "status": "baked",
        "wheel": SELECTED,
        "sha256": CUSTOM_SHA,
        "source": fetch.seen[0],
        "trust": "first-use",
        "torch": NO_GPU.torch,
    }
    [warning] = bake_records(caplog, logging.WARNING)
    assert "trust on first use" in warning.getMessage()
    assert f"pin_flash_attn_wheels.py {SELECTED}={CUSTOM_SHA} --write" in warning.getMessage()


def test_bake_refuses_a_release_url_that_is_not_https(tmp_path):
    pip, fetch = FakePip(), served({})
    status = bake(
        "auto",
        pip=pip,
        probe=probe_of(NO_GPU),
        pins={},
        base_url="http://mirror.example/v{version}/{name}",
        record=tmp_path / "r.env",
        fetch=fetch,
    )
    assert status == 1 and fetch.seen == [] and pip.calls == []


def test_bake_with_a_pin_refuses_other_bytes(tmp_path):
    pip, fetch = FakePip(), served({SELECTED: CUSTOM_SHA})
    assert bake("auto", pip=pip, probe=probe_of(NO_GPU), pins=PINS, fetch=fetch) == 1
    assert fetch.seen and pip.calls == []
    assert bake("auto", PIN, pip=pip, probe=probe_of(NO_GPU), pins={}, fetch=fetch) == 1
    assert pip.calls == []


def test_cpu_torch_says_so_in_one_line(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger=flash_attn_bake.log.name)
    record = tmp_path / "r.env"
    assert bake("auto", pip=FakePip(), probe=probe_of(CPU_TORCH), record=record) == 0
    [line] = bake_records(caplog, logging.INFO)
    assert "torch 2.4.0+cpu is a CPU build, nothing to bake" in line.getMessage()
    reason = "torch 2.4.0+cpu is a CPU build, nothing to bake"
    assert read_record(record) == {"status": "none", "reason": reason}


@pytest.mark.parametrize(
    ("argv", "called"),
    [
        (["auto", "--sha256", ""], ("auto", None)),  # the Dockerfile's empty build arg
        (["/w/x.whl", "--sha256", CUSTOM_SHA], ("/w/x.whl", CUSTOM_SHA)),
        (["https://h/x.whl"], ("https://h/x.whl", None)),
    ],
)
def test_bake_command_line(monkeypatch, argv, called, tmp_path):
    seen = []
    monkeypatch.setattr(
        flash_attn_bake, "bake", lambda choice, sha256, record: seen.append((choice, sha256))
    )
    flash_attn_bake.main([*argv, "--record", str(tmp_path / "r.env")])
    assert seen == [called]
