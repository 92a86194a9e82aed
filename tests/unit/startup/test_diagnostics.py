"""The start-up report: greppable facts, no secrets, and a function check that imports nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.config.table import SECRET_ENV
from f5worker.redact import redact_urls
from f5worker.startup import diagnostics
from f5worker.testing import REPO

SIGNATURE = "f00dfeedc0ffee5ecret5ignature"
PRESIGNED = (
    "https://wheels.s3.eu-west-1.amazonaws.com/fa/flash_attn-2.7.4.post1.whl"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fs3"
    f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG", "<redacted>"),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", "<redacted>"),
        ("BUCKET_SECRET_ACCESS_KEY", "s3cr3t", "<redacted>"),
        ("HF_TOKEN", "hf_abcdef", "<redacted>"),
        ("HF_TOKEN", "", "<empty>"),
        ("S3_BUCKET", "my-models", "my-models"),
        ("S3_ENDPOINT_URL", "https://r2.example.com", "https://r2.example.com"),
        ("S3_ENDPOINT_URL", "https://key:pass@minio.local:9000/x", "https://minio.local:9000/x"),
        ("BUCKET_ENDPOINT_URL", "https://tok@host/b", "https://host/b"),
        ("FLASH_ATTN_WHEEL_URL", PRESIGNED, PRESIGNED.split("?")[0]),
        ("S3_ENDPOINT_URL", "https://gw.example/s3?token=abc123", "https://gw.example/s3"),
        ("BUCKET_ENDPOINT_URL", "https://host/cb#access_token=abc123", "https://host/cb"),
        ("MODEL_NAME", "F5TTS_v1_Base", "F5TTS_v1_Base"),
        ("MODEL_DIR", "/runpod-volume/models/a b", "/runpod-volume/models/a b"),
    ],
)
def test_redact(name, value, shown):
    assert diagnostics.redact(name, value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (PRESIGNED, PRESIGNED.split("?")[0]),
        ("https://host/p?token=abc123&x=1", "https://host/p"),
        ("https://host/p#access_token=abc123", "https://host/p"),
        ("https://host#access_token=abc123", "https://host"),
        ("https://host?token=abc123", "https://host"),
        ("https://user:abc123@host:8443/p?q=1#f", "https://host:8443/p"),
        ("https://abc123@host/p", "https://host/p"),
        ("s3://bucket/models/x.bin?versionId=abc123", "s3://bucket/models/x.bin"),
        ("S3://AKIA:abc123@bucket/key", "S3://bucket/key"),
        ("redis://:abc123@cache:6379/0", "redis://cache:6379/0"),
        ("postgresql+psycopg://u:abc123@db/app?sslpassword=abc123", "postgresql+psycopg://db/app"),
        ("jdbc:postgresql://u:abc123@db/app?password=abc123", "jdbc:postgresql://db/app"),
        ("https://[::1]:8080/p?token=abc123", "https://[::1]:8080/p"),
        ("file:///etc/x?token=abc123", "file:///etc/x"),
        # A URL inside a longer value, and two in one value.
        ("mirror=https://h/x.whl?token=abc123 fallback", "mirror=https://h/x.whl fallback"),
        ('{"url": "https://h/p?sig=abc123"}', '{"url": "https://h/p"}'),
        ("https://a/x?sig=abc123,https://u:abc123@b/y#t=abc123", "https://a/x,https://b/y"),
        ("https://a/login?next=https://u:abc123@b/cb", "https://a/loginhttps://b/cb"),
        ("(see https://h/p?token=abc123).", "(see https://h/p)."),
        ("https://h/p?token=abc123);", "https://h/p);"),
        # Malformed userinfo fails closed: an unencoded `/` (AWS secrets have them) or `?`.
        ("https://AKIA:wJalr/abc123@minio:9000/bucket", "https://minio:9000/bucket"),
        ("https://user:ab?c123@host/p", "https://<redacted>"),
        ("https://u:p@ss@host/p", "https://host/p"),
        # Not URLs: unchanged.
        ("F5TTS_v1_Base", "F5TTS_v1_Base"),
        ("/tmp/models?x=1#y", "/tmp/models?x=1#y"),
        ("host:9000/path?token=1", "host:9000/path?token=1"),
        ("auto", "auto"),
        ("", ""),
        ("a b  c", "a b  c"),
    ],
)
def test_redact_urls_keeps_scheme_host_and_path_only(value, shown):
    assert redact_urls(value) == shown
    assert "abc123" not in redact_urls(value)
    assert diagnostics.redact("ANY_URL", value) == shown


def test_start_up_report_never_logs_a_url_secret(tmp_path, caplog):
    """collect + log_report, as start-up runs them, with every kind of URL secret in the env."""
    env = {
        "FLASH_ATTN_WHEEL_URL": PRESIGNED,
        "S3_ENDPOINT_URL": "https://minio.local:9000/?token=tok-in-query",
        "BUCKET_ENDPOINT_URL": "https://user:pw-in-userinfo@bucket.example/b#access_token=tok-frag",
        "MODEL_DIR": "/models note=https://x.example/m?sig=sig-in-longer-value",
        "HF_TOKEN": "hf_in_token_variable",
        "AWS_SECRET_ACCESS_KEY": "aws/secret+key",
    }
    secrets = (
        SIGNATURE,
        "AKIAEXAMPLE",
        "tok-in-query",
        "pw-in-userinfo",
        "tok-frag",
        "sig-in-longer-value",
        "hf_in_token_variable",
        "aws/secret+key",
    )
    caplog.set_level(logging.INFO, logger="f5worker.startup.diagnostics")
    facts = diagnostics.collect(Settings(model_cache_dir=tmp_path), env)
    diagnostics.log_report(facts)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "diag.env=" in logged and "https://bucket.example/b" in logged
    assert PRESIGNED.split("?")[0] in logged and "https://x.example/m" in logged
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in diagnostics.format_report(facts), secret


def test_log_report_cuts_urls_in_any_fact(caplog):
    caplog.set_level(logging.INFO, logger="f5worker.startup.diagnostics")
    diagnostics.log_report({"flash_attn.wheel": "none (https://h/x.whl?X-Amz-Signature=abc123)"})
    assert [r.getMessage() for r in caplog.records] == [
        "diag.flash_attn.wheel=none (https://h/x.whl)"
    ]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("def f(): pass\nasync def g(): pass\nclass C: pass\n", {"f", "g", "C"}),
        ("X = 1\nY: int = 2\na, b = 1, 2\n", {"X", "Y"}),
        ("from s3_sync import sync_models_from_s3 as sync\nimport os.path\n", {"sync", "os"}),
        ("try:\n    from fast import f\nexcept ImportError:\n    def f(): pass\n", {"f"}),
        ("if True:\n    def g(): pass\nelse:\n    h = 1\n", {"g", "h"}),
        ("def outer():\n    def inner(): pass\n", {"outer"}),
    ],
)
def test_top_level_names(source, names):
    assert diagnostics.top_level_names(source) == names


@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
    """Modules on sys.path that must be checked without being imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {
        # An image built from old code: the transfer helpers exist, the cache sync does not.
        "old_s3_utils.py": """
            raise RuntimeError("imported! the check must read the source instead")
            def download_from_s3(): ...
            def upload_to_s3(): ...
        """,
        "new_s3_utils.py": """
            from s3_sync import sync_models_from_s3, upload_models_to_s3
            def download_from_s3(): ...
            def upload_to_s3(): ...
        """,
        "broken_module.py": "def f(:\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


S3_FUNCTIONS = diagnostics.REQUIRED_FUNCTIONS["s3_utils"]


@pytest.mark.parametrize(
    ("module", "missing"),
    [
        ("old_s3_utils", ["old_s3_utils.sync_models_from_s3", "old_s3_utils.upload_models_to_s3"]),
        ("new_s3_utils", []),
        ("no_such_module", ["no_such_module (module not found)"]),
        ("broken_module", ["broken_module (unreadable: SyntaxError)"]),
    ],
)
def test_missing_functions_reads_source_without_importing(fake_modules, module, missing):
    assert diagnostics.missing_functions(module, S3_FUNCTIONS) == missing
    assert module not in sys.modules


def test_missing_function_fails_the_report(fake_modules, tmp_path):
    settings = Settings(model_cache_dir=tmp_path)
    facts = diagnostics.collect(settings, {}, required={"old_s3_utils": S3_FUNCTIONS})
    assert diagnostics.missing_required(facts) == [
        "old_s3_utils.sync_models_from_s3,old_s3_utils.upload_models_to_s3"
    ]


def test_this_checkout_exposes_every_required_function():
    for module, names in diagnostics.REQUIRED_FUNCTIONS.items():
        assert diagnostics.missing_functions(module, names) == [], module


def test_report_facts_and_format(tmp_path):
    env = {
        "MODEL_NAME": "demo",
        "WORKER_GIT_SHA": "abc123",
        "AWS_SECRET_ACCESS_KEY": "hunter2",
        "UNRELATED_VARIABLE": "not reported",
    }
    settings = Settings(
        model_cache_dir=tmp_path / "not-yet", worker_version="v9", worker_git_sha="abc123"
    )
    facts = diagnostics.collect(settings, env)
    for key in (
        "python",
        "torch",
        "torch_cuda",
        "cudnn",
        "cxx11abi",
        "cuda_available",
        "flash_attn.wheel",
        "pkg.f5-tts",
        "pkg.runpod",
        "pkg.boto3",
        "pkg.flash-attn",
        "pkg.faster-whisper",
        "pkg.ctranslate2",
        "disk.tmp_free_gb",
        "disk.cache_dir_free_gb",
    ):
        assert facts[key], key
    assert facts["worker_version"] == "v9" and facts["git_sha"] == "abc123"
    # The settings table's variables in its order, secrets redacted; nothing else.
    assert facts["env"] == "MODEL_NAME=demo AWS_SECRET_ACCESS_KEY=<redacted> WORKER_GIT_SHA=abc123"
    report = diagnostics.format_report(facts)
    assert "hunter2" not in report
    assert all(line.startswith("diag.") and "=" in line for line in report.splitlines())


def test_git_sha_from_the_checkout_when_not_stamped():
    sha = diagnostics._git_sha("unknown")
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    assert sha == (head.stdout.strip() if head.returncode == 0 else "unknown")


@pytest.mark.slow
def test_collect_imports_neither_handler_nor_f5_tts(tmp_path):
    code = textwrap.dedent(f"""
        import pathlib, sys
        from f5worker.config import Settings
        from f5worker.startup import diagnostics
        settings = Settings(model_cache_dir=pathlib.Path({str(tmp_path)!r}))
        diagnostics.collect(settings, {{}})
        heavy = ("handler", "f5worker.job.worker", "f5worker.engine.f5tts", "f5_tts")
        print(",".join(m for m in heavy if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_free_gb_walks_up_to_an_existing_dir(tmp_path):
    assert float(diagnostics._free_gb(Path(tmp_path) / "a" / "b")) > 0


@pytest.mark.parametrize("name", sorted(SECRET_ENV))
def test_every_secret_setting_is_redacted(name):
    assert diagnostics.redact(name, "s3cr3t-value") == "<redacted>"


def test_the_baked_flash_attn_wheel_and_its_sha256_are_reported(monkeypatch):
    """What the image build baked (its record): name, sha256 and whether it was pinned, so the
    operator can pin a first-use wheel from the log."""
    from f5worker.startup import flash_attn_install

    wheel = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
    baked = {"status": "baked", "wheel": wheel, "sha256": "ab" * 32, "trust": "first-use"}
    monkeypatch.setattr(flash_attn_install, "read_record", lambda: baked)
    assert diagnostics._flash_attn_wheel() == {
        "flash_attn.wheel": wheel,
        "flash_attn.wheel_sha256": "ab" * 32,
        "flash_attn.wheel_source": "baked (first-use)",
    }
    report = diagnostics.format_report(diagnostics._flash_attn_wheel())
    assert f"diag.flash_attn.wheel_sha256={'ab' * 32}" in report.splitlines()
    skipped = {"status": "none", "reason": "FLASH_ATTN_BAKE=none"}
    monkeypatch.setattr(flash_attn_install, "read_record", lambda: skipped)
    facts = diagnostics._flash_attn_wheel()
    assert facts["flash_attn.baked"] == "none (FLASH_ATTN_BAKE=none)"
    assert "flash_attn.wheel" in facts  # the selection for this torch, as before
    monkeypatch.setattr(flash_attn_install, "read_record", lambda: None)
    assert diagnostics._flash_attn_wheel()["flash_attn.baked"] == "none (no bake record)"
