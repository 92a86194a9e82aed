"""Reference audio from base64, URLs (a real HTTP server on 127.0.0.1) and s3:// (moto)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from moto import mock_aws

from f5worker.errors import BadRefAudio, StorageError
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher, decode_base64, parse_s3_url
from f5worker.s3 import make_client
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.web import audio_server

LIMIT = 64 * 1024
AUDIO = wav_bytes(noise(0.5))  # 24 KB
POLICY = FetchPolicy(max_bytes=LIMIT, total_timeout_s=1.0, allow_http_loopback=True)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with audio_server(AUDIO, LIMIT) as url:
        yield url


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The SDK's SSRF guard refuses 127.0.0.1 unless its own escape hatch is set."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")


def test_url_reference_is_downloaded(server, loopback_allowed):
    assert RefAudioFetcher(POLICY).fetch(f"{server}/ref.wav", "url") == AUDIO


def test_redirect_is_followed(server, loopback_allowed):
    assert RefAudioFetcher(POLICY).fetch(f"{server}/redirect", "url") == AUDIO


def test_non_audio_page_is_returned_for_the_decoder_to_refuse(server, loopback_allowed):
    assert RefAudioFetcher(POLICY).fetch(f"{server}/page.html", "url").startswith(b"<html>")


BAD_URLS = [
    ("/missing.wav", "answered HTTP 404"),
    ("/error.wav", "answered HTTP 500"),
    ("/declared-big.wav", f"larger than {LIMIT} bytes"),
    ("/chunked-big.wav", f"larger than {LIMIT} bytes"),
    ("/gzip-bomb.wav", f"larger than {LIMIT} bytes"),
    ("/drip.wav", "took longer than 1 s"),
    ("/silent-hang.wav", "did not answer within 1 s"),
    ("/redirect-loop", "not allowed"),
]


@pytest.mark.parametrize(("path", "fragment"), BAD_URLS)
def test_bad_urls_are_bad_ref_audio_within_the_time_limit(server, loopback_allowed, path, fragment):
    started = time.monotonic()
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(POLICY).fetch(f"{server}{path}", "url")
    assert fragment in info.value.message
    assert time.monotonic() - started < 2.5


def test_connection_refused(loopback_allowed):
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(POLICY).fetch("http://127.0.0.1:9/ref.wav", "url")
    assert "could not be fetched (ConnectionError)" in info.value.message


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://example.com/ref.wav", POLICY),  # http only for loopback, only in tests
        ("http://127.0.0.1:9/ref.wav", FetchPolicy()),  # and only when the policy says so
        ("ftp://example.com/ref.wav", POLICY),
        ("https:///ref.wav", POLICY),
    ],
)
def test_only_https_is_accepted(url, policy):
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(policy).fetch(url, "url")
    assert "must be https://" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/ref.wav",
        "https://169.254.169.254/latest/meta-data/",  # cloud instance metadata
        "https://10.0.0.1/ref.wav",
        "https://localhost/ref.wav",
        "https://[::1]/ref.wav",
    ],
)
def test_private_addresses_are_refused_in_production(url, monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher().fetch(url, "url")
    assert "must resolve to public addresses" in info.value.message


def test_loopback_server_is_refused_without_the_escape_hatch(server, monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    with pytest.raises(BadRefAudio):
        RefAudioFetcher(POLICY).fetch(f"{server}/ref.wav", "url")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (base64.b64encode(AUDIO).decode(), AUDIO),
        (base64.encodebytes(AUDIO).decode(), AUDIO),  # wrapped at 76 columns, as `base64` does
        ("data:audio/wav;base64," + base64.b64encode(AUDIO).decode(), AUDIO),
        ("  " + base64.b64encode(b"abc").decode() + "\n", b"abc"),
    ],
)
def test_base64_forms(text, expected):
    assert RefAudioFetcher().fetch(text, "base64") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("@@not base64@@", "not valid base64"),
        ("AAA", "not valid base64"),  # bad padding
        ("data:audio/wav;base64,@@", "not valid base64"),
        ("é" * 8, "not valid base64"),
        (base64.b64encode(b"x" * (LIMIT + 3)).decode(), "larger than"),
    ],
)
def test_bad_base64(text, fragment):
    with pytest.raises(BadRefAudio) as info:
        decode_base64(text, LIMIT)
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("s3://bucket/key.wav", ("bucket", "key.wav")),
        ("s3://my.bucket-1/a/b/c.wav", ("my.bucket-1", "a/b/c.wav")),
    ],
)
def test_parse_s3_url(ref, expected):
    assert parse_s3_url(ref) == expected


@pytest.mark.parametrize(
    "ref", ["s3://", "s3://bucket", "s3://bucket/", "s3://B/key", "s3://a/key", "s3:/x/y"]
)
def test_bad_s3_urls(ref):
    with pytest.raises(BadRefAudio) as info:
        parse_s3_url(ref)
    assert "s3://bucket/key" in info.value.message


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    with mock_aws():
        client = make_client(region="us-east-1")
        client.create_bucket(Bucket="refs")
        client.put_object(Bucket="refs", Key="a/ref.wav", Body=AUDIO)
        client.put_object(Bucket="refs", Key="big.wav", Body=b"x" * (LIMIT + 1))
        yield client


def test_s3_reference(s3):
    fetcher = RefAudioFetcher(POLICY, s3_client_factory=lambda: s3)
    assert fetcher.fetch("s3://refs/a/ref.wav", "s3") == AUDIO


@pytest.mark.parametrize(
    ("ref", "error", "fragment"),
    [
        ("s3://refs/nope.wav", BadRefAudio, "cannot be read: NoSuchKey"),
        ("s3://no-such-bucket/a.wav", BadRefAudio, "cannot be read: NoSuchBucket"),
        ("s3://refs/big.wav", BadRefAudio, "larger than"),
    ],
)
def test_bad_s3_references(s3, ref, error, fragment):
    fetcher = RefAudioFetcher(POLICY, s3_client_factory=lambda: s3)
    with pytest.raises(error) as info:
        fetcher.fetch(ref, "s3")
    assert fragment in info.value.message


def test_s3_without_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fetcher = RefAudioFetcher(s3_client_factory=lambda: make_client("http://127.0.0.1:9", "x"))
    with pytest.raises(BadRefAudio) as info:
        fetcher.fetch("s3://refs/a.wav", "s3")
    assert "no credentials" in info.value.message


def test_unreachable_s3_is_a_retryable_storage_error():
    fetcher = RefAudioFetcher(
        s3_client_factory=lambda: make_client("http://127.0.0.1:9", "us-east-1", "k", "s")
    )
    with pytest.raises(StorageError) as info:
        fetcher.fetch("s3://refs/a.wav", "s3")
    assert info.value.retryable and "s3://refs" in info.value.message


def test_s3_refs_need_a_client():
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher().fetch("s3://refs/a.wav", "s3")
    assert "not enabled" in info.value.message
