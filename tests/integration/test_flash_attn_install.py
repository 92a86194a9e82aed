"""The real install path: pip in a throwaway venv, wheels served by local HTTP(S) servers.

The wheels are built here: a pure-python `flash_attn` whose `flash_attn_2_cuda` either imports or
raises the undefined-symbol ImportError a wheel built for another torch/C++ ABI raises. They carry
release-style names, so selection, pin, download, sha256 check, the fresh-interpreter check and
the uninstall on failure all run for real. Custom wheel URLs must be https, so a second server
speaks TLS with a certificate made here and trusted through SSL_CERT_FILE. Everything listens on
127.0.0.1; the project venv is never modified.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import http.server
import io
import ipaddress
import logging
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from container.fake_flash_attn import (
    BROKEN_KERNEL,
    F5_TTS_IMPORTS,
    GOOD_KERNEL,
    make_wheel,
)
from f5worker.config import Settings
from f5worker.errors import ConfigError
from f5worker.startup.flash_attn import FlashAttnUnavailable, ensure_flash_attn
from f5worker.startup.flash_attn_bake import bake
from f5worker.startup.flash_attn_install import DownloadError, Pip, download, read_record
from f5worker.startup.flash_attn_wheels import TorchBuild

pytestmark = pytest.mark.slow

BUILD = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64", cuda_available=True)
SELECTED = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
SDIST = "flash_attn-2.7.4.post1.tar.gz"
OTHER_SHA = hashlib.sha256(b"not the wheel").hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files from a directory; /redirect/<url> answers 302 to <url>; /drip/ trickles bytes."""

    requested: list[str]

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        return

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/drip/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            return
        super().do_GET()


@contextlib.contextmanager
def wheel_server(root: Path, tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[str]]]:
    requested: list[str] = []
    handler = type("Handler", (_Handler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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


@pytest.fixture
def served_tls(tmp_path, certificate, monkeypatch) -> Iterator[tuple[str, Path, list[str]]]:
    """The same over https, its certificate trusted by this process's default SSL context."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    root = tmp_path / "mirror"
    root.mkdir()
    with wheel_server(root, context) as (url, requested):
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


def make_sdist(path: Path, marker: Path) -> Path:
    """A source distribution whose setup.py leaves `marker` behind if anything ever runs it."""
    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup()\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {
            "flash_attn-2.7.4.post1/setup.py": setup,
            "flash_attn-2.7.4.post1/PKG-INFO": "Metadata-Version: 2.1\nName: flash_attn\n"
            "Version: 2.7.4.post1\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def run_selected(pip: Pip, base: str, pins: dict[str, str], mode: str = "auto"):
    return ensure_flash_attn(
        mode,
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
        base_url=base + "/v{version}/{name}",
        pins=pins,
    )


def test_selected_wheel_is_downloaded_checked_installed_and_proven(served, pip, venv, caplog):
    base, root, requested = served
    wheel = make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    outcome = run_selected(pip, base, {SELECTED: sha256_of(wheel)})
    assert (outcome.backend, outcome.status, outcome.detail) == (
        "flash_attn",
        "installed",
        SELECTED,
    )
    assert requested == [f"/v2.7.4.post1/{SELECTED}"]
    assert installed(venv) and pip.verify() is None
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_wheel_not_matching_its_pin_is_refused_and_nothing_installed(served, pip, venv, mode):
    """The bytes served are not the pinned ones (a tampered mirror, a re-uploaded asset)."""
    base, root, requested = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    if mode == "require":
        with pytest.raises(FlashAttnUnavailable, match=r"sha256 of .* expected"):
            run_selected(pip, base, {SELECTED: OTHER_SHA}, mode)
    else:
        outcome = run_selected(pip, base, {SELECTED: OTHER_SHA}, mode)
        assert (outcome.backend, outcome.status) == ("torch", "fallback")
        assert f"expected {OTHER_SHA}: refused" in outcome.detail
    assert requested == [f"/v2.7.4.post1/{SELECTED}"]
    assert not installed(venv)


def test_unpinned_selection_downloads_nothing(served, pip, venv, caplog):
    base, root, requested = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    outcome = run_selected(pip, base, {})
    assert outcome.status == "fallback" and "no pinned sha256" in outcome.detail
    assert requested == [] and not installed(venv)
    assert len(warnings_of(caplog)) == 1


def test_undefined_symbol_is_reported_as_abi_mismatch_and_uninstalled(served, pip, venv, caplog):
    base, root, _ = served
    wheel = make_wheel(root / "v2.7.4.post1" / SELECTED, BROKEN_KERNEL)
    outcome = run_selected(pip, base, {SELECTED: sha256_of(wheel)})
    assert (outcome.backend, outcome.status) == ("torch", "fallback")
    [warning] = warnings_of(caplog)
    assert "torch/ABI mismatch" in warning
    assert "wheel built for torch 2.4 cxx11abi=FALSE, running torch 2.4.0+cu124" in warning
    assert "std::__cxx11::basic_string" in warning  # demangled
    assert "new-ABI (cxx11abiTRUE) wheel on an old-ABI torch" in warning
    assert not installed(venv)  # f5-tts would import a broken flash_attn and fail


def test_require_with_a_broken_wheel_fails_and_leaves_nothing(served, pip, venv):
    base, root, _ = served
    wheel = make_wheel(root / "v2.7.4.post1" / SELECTED, BROKEN_KERNEL)
    with pytest.raises(FlashAttnUnavailable, match="torch/ABI mismatch"):
        run_selected(pip, base, {SELECTED: sha256_of(wheel)}, "require")
    assert not installed(venv)


def test_missing_release_asset_falls_back(served, pip, venv, caplog):
    base, _, requested = served
    outcome = run_selected(pip, base, {SELECTED: OTHER_SHA})
    assert outcome.status == "fallback" and "install failed" in outcome.detail
    assert "HTTP 404" in outcome.detail
    assert requested and len(warnings_of(caplog)) == 1
    assert not installed(venv)


def test_custom_https_wheel_with_its_sha256_replaces_a_broken_install(
    served_tls, pip, venv, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="f5worker.startup.flash_attn")
    base, root, requested = served_tls
    broken = make_wheel(tmp_path / SELECTED, BROKEN_KERNEL)
    pip.install(str(broken), sha256_of(broken))  # what an image built with the wrong wheel ships
    assert pip.verify() is not None
    good = make_wheel(root / SELECTED, GOOD_KERNEL)
    url = f"{base}/{SELECTED}?X-Amz-Signature=s3cr3tsig#access_token=s3cr3ttok"
    outcome = ensure_flash_attn(
        "auto",
        url,
        wheel_sha256=sha256_of(good),
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
    )
    assert outcome.status == "installed" and outcome.detail == SELECTED
    assert requested == [f"/{SELECTED}?X-Amz-Signature=s3cr3tsig"]
    assert pip.verify() is None
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"installing {base}/{SELECTED}" in logged and "s3cr3t" not in logged


def test_custom_https_wheel_with_the_wrong_sha256_is_refused(served_tls, pip, venv):
    base, root, requested = served_tls
    make_wheel(root / SELECTED, GOOD_KERNEL)
    outcome = ensure_flash_attn(
        "auto",
        f"{base}/{SELECTED}",
        wheel_sha256=OTHER_SHA,
        probe=lambda: BUILD,
        pip=pip,
        check_present=pip.verify,
    )
    assert outcome.status == "fallback" and "refused" in outcome.detail
    assert requested == [f"/{SELECTED}"] and not installed(venv)


def test_http_custom_url_is_refused_before_any_request(served, pip, venv):
    base, root, requested = served
    wheel = make_wheel(root / SELECTED, GOOD_KERNEL)
    url = f"{base}/{SELECTED}"
    env = {"FLASH_ATTN_WHEEL_URL": url, "FLASH_ATTN_WHEEL_SHA256": sha256_of(wheel)}
    with pytest.raises(ConfigError, match=r"FLASH_ATTN_WHEEL_URL.*https"):
        Settings.from_env(env)
    for mode in ("auto", "require"):
        with pytest.raises(ConfigError, match="https"):
            ensure_flash_attn(
                mode,
                url,
                wheel_sha256=sha256_of(wheel),
                probe=lambda: BUILD,
                pip=pip,
                check_present=pip.verify,
            )
    assert requested == [] and not installed(venv)


def test_sdist_url_is_refused_and_never_built(served_tls, pip, venv, tmp_path):
    base, root, requested = served_tls
    marker = tmp_path / "setup-py-ran"
    sdist = make_sdist(root / SDIST, marker)
    url = f"{base}/{SDIST}"
    with pytest.raises(ConfigError, match=r"\.whl"):
        Settings.from_env({"FLASH_ATTN_WHEEL_URL": url, "FLASH_ATTN_WHEEL_SHA256": OTHER_SHA})
    with pytest.raises(ConfigError, match=r"\.whl"):
        ensure_flash_attn("auto", url, wheel_sha256=sha256_of(sdist), probe=lambda: BUILD, pip=pip)
    with pytest.raises(DownloadError, match=r"not a \.whl"):  # the installer itself, too
        pip.install(url, sha256_of(sdist))
    assert requested == []
    # An sdist renamed to .whl, with its true hash: pip is told to install a wheel, never builds.
    disguised = root / SELECTED
    disguised.write_bytes(sdist.read_bytes())
    with pytest.raises(OSError, match="pip install failed"):
        pip.install(f"{base}/{SELECTED}", sha256_of(disguised))
    assert not marker.exists() and not installed(venv)


def test_download_is_capped_in_size_and_time(served_tls, tmp_path):
    base, root, _ = served_tls
    (root / "big.whl").write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError, match="cap"):
        download(f"{base}/big.whl", tmp_path / "big.whl", max_bytes=1000)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"took over 1 s|timed out"):
        download(f"{base}/drip/x.whl", tmp_path / "drip.whl", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_download_refuses_a_redirect_off_https(served_tls, served, tmp_path):
    tls_base, _, _ = served_tls
    plain_base, root, plain_requested = served
    make_wheel(root / SELECTED, GOOD_KERNEL)
    with pytest.raises(DownloadError, match="refused a redirect from https"):
        download(f"{tls_base}/redirect/{plain_base}/{SELECTED}", tmp_path / SELECTED)
    assert plain_requested == []
    with pytest.raises(DownloadError, match="only http"):
        download(f"file://{root / SELECTED}", tmp_path / SELECTED)


def test_bake_refuses_a_release_url_over_plain_http(served, pip, venv, tmp_path):
    """The official release URL is https; a base URL that is not is refused before any request."""
    base, root, requested = served
    make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    no_gpu = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64")
    base_url = base + "/v{version}/{name}"
    record = tmp_path / "record.env"
    assert bake("auto", pip=pip, probe=lambda: no_gpu, base_url=base_url, record=record) == 1
    assert requested == [] and not installed(venv) and not record.exists()


def test_bake_without_a_pin_is_trust_on_first_use_over_https(served_tls, pip, venv, tmp_path):
    """No pin: the release URL's bytes (https) are installed, proven, and their sha256 recorded
    for the labels and the start-up log; with a pin, other bytes fail the build."""
    base, root, requested = served_tls
    (root / "v2.7.4.post1").mkdir()
    wheel = make_wheel(root / "v2.7.4.post1" / SELECTED, GOOD_KERNEL)
    no_gpu = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64")
    probe, base_url = (lambda: no_gpu), base + "/v{version}/{name}"
    record = tmp_path / "record.env"
    assert bake("auto", pip=pip, probe=probe, base_url=base_url, pins={}, record=record) == 0
    assert requested == [f"/v2.7.4.post1/{SELECTED}"] and pip.verify() is None
    baked = read_record(record)
    assert (baked["sha256"], baked["trust"]) == (sha256_of(wheel), "first-use")
    assert baked["source"] == f"{base}/v2.7.4.post1/{SELECTED}"
    pip.uninstall()
    pins = {SELECTED: OTHER_SHA}
    assert bake("auto", pip=pip, probe=probe, base_url=base_url, pins=pins, record=record) == 1
    assert not installed(venv)
    pins = {SELECTED: sha256_of(wheel)}
    assert bake("auto", pip=pip, probe=probe, base_url=base_url, pins=pins, record=record) == 0
    assert read_record(record)["trust"] == "pinned" and pip.verify() is None


def test_bake_a_local_wheel_file_checks_its_sha256(pip, venv, tmp_path):
    """FLASH_ATTN_BAKE=/path/x.whl (a build with no network): the same hash rule."""
    (tmp_path / "build context").mkdir()  # any path: pip is given a file URI
    wheel = make_wheel(tmp_path / "build context" / SELECTED, GOOD_KERNEL)
    no_gpu = TorchBuild("2.4.0+cu124", "12.4", False, "cp311", "linux_x86_64")
    assert bake(str(wheel), OTHER_SHA, pip=pip, probe=lambda: no_gpu) == 1
    assert not installed(venv)
    assert bake(str(wheel), None, pip=pip, probe=lambda: no_gpu) == 1
    assert bake(str(wheel), sha256_of(wheel), pip=pip, probe=lambda: no_gpu) == 0
    assert pip.verify() is None


def test_stand_in_wheel_offers_what_f5_tts_imports(tmp_path, pip, venv):
    """The wheel `make container-test` bakes into its image: f5-tts must still import with it."""
    wheel = make_wheel(tmp_path / SELECTED, GOOD_KERNEL, extra=F5_TTS_IMPORTS)
    pip.install(str(wheel), sha256_of(wheel))
    code = (
        "from flash_attn import flash_attn_func, flash_attn_varlen_func\n"
        "from flash_attn.bert_padding import pad_input, unpad_input\n"
    )
    assert subprocess.run([str(venv), "-c", code]).returncode == 0
    assert pip.verify() is None
