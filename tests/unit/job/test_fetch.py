"""Reference audio from base64, URLs (real HTTP servers on 127.0.0.1) and s3:// (moto)."""

from __future__ import annotations

import base64
import contextlib
import gc
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from f5worker.config import S3Scope, Settings
from f5worker.errors import BadRefAudio, StorageError
from f5worker.job.fetch import (
    S3_UNUSABLE,
    FetchPolicy,
    RefAudioFetcher,
    decode_base64,
    parse_s3_url,
)
from f5worker.s3 import make_client
from f5worker.safe_fetch import DOWNGRADE, NotPublicAddress, _public_socket, redirect_target
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.web import SERVER_THREAD, audio_server, silent_server

LIMIT = 64 * 1024
AUDIO = wav_bytes(noise(0.5))  # 24 KB
POLICY = FetchPolicy(max_bytes=LIMIT, total_timeout_s=1.0, allow_http_loopback=True)
# What the whole fetch may take: the deadline and a small margin, whatever the server does.
# The deadline plus a margin for a busy 2-core machine (the old per-read timeout let a
# dripping server hold a fetch for minutes).
WITHIN = POLICY.total_timeout_s + 1.5


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with audio_server(AUDIO, LIMIT) as url:
        yield url


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The SDK's escape hatch, as a policy left at None reads it: tests only."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")


@contextlib.contextmanager
def nothing_left_behind() -> Iterator[None]:
    """No thread the fetch started is still running, and no socket is left unclosed."""
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    left = [
        t for t in threading.enumerate() if t not in before and not t.name.startswith(SERVER_THREAD)
    ]
    assert left == []
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def fetch_url(url: str, policy: FetchPolicy = POLICY) -> tuple[str, float]:
    """(error message, seconds) of a fetch that must fail with BAD_REF_AUDIO."""
    started = time.monotonic()
    with nothing_left_behind(), pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(policy).fetch(url, "url")
    return info.value.message, time.monotonic() - started


def test_url_reference_is_downloaded(server, loopback_allowed):
    with nothing_left_behind():
        assert RefAudioFetcher(POLICY).fetch(f"{server}/ref.wav", "url") == AUDIO


def test_redirects_are_followed_up_to_three(server, loopback_allowed):
    for path in ("/redirect", "/chain/3"):
        assert RefAudioFetcher(POLICY).fetch(f"{server}{path}", "url") == AUDIO


def test_a_compressed_body_sent_anyway_is_inflated(server, loopback_allowed):
    assert RefAudioFetcher(POLICY).fetch(f"{server}/gzip.wav", "url") == AUDIO


def test_non_audio_page_is_returned_for_the_decoder_to_refuse(server, loopback_allowed):
    assert RefAudioFetcher(POLICY).fetch(f"{server}/page.html", "url").startswith(b"<html>")


def test_the_policy_field_is_the_escape_hatch(server, monkeypatch):
    """The worker passes RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS from Settings; the policy decides."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    strict = FetchPolicy(max_bytes=LIMIT, allow_http_loopback=True, allow_private_addresses=False)
    message, _ = fetch_url(f"{server}/ref.wav", strict)
    assert "must resolve to public addresses" in message
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS")
    lenient = FetchPolicy(max_bytes=LIMIT, allow_http_loopback=True, allow_private_addresses=True)
    assert RefAudioFetcher(lenient).fetch(f"{server}/ref.wav", "url") == AUDIO


def test_a_name_is_resolved_in_a_thread_that_is_gone_afterwards(server, loopback_allowed):
    """localhost goes through the resolver (an IP literal never does)."""
    url = server.replace("127.0.0.1", "localhost") + "/ref.wav"
    with nothing_left_behind():  # the lookup's thread included
        assert RefAudioFetcher(POLICY).fetch(url, "url") == AUDIO
    # Not a thread count: the test server's handler thread for this request may still be ending.
    assert not [t for t in threading.enumerate() if t.name == "ref-audio-dns"]


def test_a_slow_name_lookup_ends_at_the_deadline(server, loopback_allowed, monkeypatch):
    """getaddrinfo cannot be cancelled: the fetch stops waiting for it at the deadline."""
    real = socket.getaddrinfo

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(POLICY).fetch(server.replace("127.0.0.1", "localhost"), "url")
    elapsed = time.monotonic() - started
    for thread in threading.enumerate():  # the lookup ends on its own; not the next test's
        if thread.name == "ref-audio-dns":
            thread.join(2)
    assert info.value.message == "ref_audio URL did not finish within 1 s"
    assert elapsed < WITHIN


BAD_URLS = [
    ("/missing.wav", "answered HTTP 404"),
    ("/error.wav", "answered HTTP 500"),
    ("/declared-big.wav", f"larger than {LIMIT} bytes"),
    ("/chunked-big.wav", f"larger than {LIMIT} bytes"),
    ("/gzip-bomb.wav", f"larger than {LIMIT} bytes"),
    ("/deflate-bomb.wav", f"larger than {LIMIT} bytes"),
    ("/brotli.wav", "Content-Encoding other than identity, gzip or deflate"),
    ("/redirect-loop", "too many redirects (more than 3)"),
    ("/chain/4", "too many redirects (more than 3)"),
]


@pytest.mark.parametrize(("path", "fragment"), BAD_URLS)
def test_bad_urls_are_bad_ref_audio(server, loopback_allowed, path, fragment):
    message, elapsed = fetch_url(f"{server}{path}")
    assert fragment in message and "public addresses" not in message
    assert "127.0.0.1" not in message and elapsed < WITHIN


SLOW_URLS = [
    "/drip.wav",  # the body, a byte every 50 ms
    "/drip-headers.wav",  # the status line and headers, a byte every 50 ms
    "/slow-chain/3",  # redirects, each 0.4 s: each hop is quick, the chain is not
    "/silent-hang.wav",  # reads the request, never answers
]


@pytest.mark.parametrize("path", SLOW_URLS)
def test_slow_servers_end_at_the_deadline(server, loopback_allowed, path):
    message, elapsed = fetch_url(f"{server}{path}?token=secret")
    assert message == "ref_audio URL did not finish within 1 s"
    assert POLICY.total_timeout_s - 0.05 <= elapsed < WITHIN


def test_a_server_that_accepts_and_never_answers(loopback_allowed):
    with silent_server() as url:
        fds = len(os.listdir("/proc/self/fd"))
        threads = threading.active_count()
        message, elapsed = fetch_url(f"{url}/ref.wav")
        # the client's socket is closed (other threads may close theirs meanwhile)
        assert len(os.listdir("/proc/self/fd")) <= fds
    assert message == "ref_audio URL did not finish within 1 s"
    assert POLICY.total_timeout_s - 0.05 <= elapsed < WITHIN
    assert threading.active_count() <= threads  # no fetch thread left (the server's ended too)


def test_the_deadline_is_the_policys(server, loopback_allowed):
    policy = FetchPolicy(max_bytes=LIMIT, total_timeout_s=0.3, allow_http_loopback=True)
    message, elapsed = fetch_url(f"{server}/drip-headers.wav", policy)
    assert message == "ref_audio URL did not finish within 0.3 s" and elapsed < 1.8


def test_connection_refused(loopback_allowed):
    message, _ = fetch_url("http://127.0.0.1:9/ref.wav")
    assert message == "ref_audio URL could not be fetched (ConnectionError)"


def test_an_unresolvable_host_says_so():
    message, elapsed = fetch_url("https://no-such-host.invalid/ref.wav?sig=secret")
    assert message == "ref_audio URL failed: cannot resolve host" and elapsed < WITHIN


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://example.com/ref.wav", POLICY),  # http only for loopback, only in tests
        ("http://127.0.0.1:9/ref.wav", FetchPolicy()),  # and only when the policy says so
        ("ftp://example.com/ref.wav", POLICY),
        ("https:///ref.wav", POLICY),
        ("https://example.com:port/ref.wav", POLICY),
        ("https://[::1/ref.wav", POLICY),
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
        "https://100.64.0.1/ref.wav",  # carrier-grade NAT
        "https://localhost/ref.wav",  # a name: refused by the resolver
        "https://0x7f.1/ref.wav",  # a name the system resolver reads as 127.0.0.1
        "https://127.1/ref.wav",
        "https://2130706433/ref.wav",
        "https://[::1]/ref.wav",
        "https://[::ffff:169.254.169.254]/ref.wav",
        "https://[fe80::1%25eth0]/ref.wav",
    ],
)
def test_private_addresses_are_refused_in_production(url, monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    message, _ = fetch_url(url, FetchPolicy())
    assert message == "ref_audio URL is not allowed: its host must resolve to public addresses"


def test_loopback_server_is_refused_without_the_escape_hatch(server, monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    message, _ = fetch_url(f"{server}/ref.wav")
    assert "must resolve to public addresses" in message


def test_every_socket_is_checked_right_before_it_connects():
    """The last line, should a hop reach aiohttp unchecked."""
    factory = _public_socket(private_ok=False)
    with pytest.raises(NotPublicAddress):
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 443)))
    with contextlib.closing(
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)))
    ) as sock:
        assert sock.family == socket.AF_INET


@pytest.mark.parametrize(
    ("current", "location", "expected"),
    [
        ("https://a.example/x", "/y.wav", "https://a.example/y.wav"),
        ("https://a.example/x/", "y.wav", "https://a.example/x/y.wav"),
        ("https://a.example/x", "//b.example/y.wav", "https://b.example/y.wav"),
        ("https://a.example/x", "https://b.example/y.wav", "https://b.example/y.wav"),
        ("http://127.0.0.1:8/x", "/y.wav", "http://127.0.0.1:8/y.wav"),  # tests' loopback
        ("http://127.0.0.1:8/x", "https://b.example/y", "https://b.example/y"),  # an upgrade
    ],
)
def test_redirect_targets(current, location, expected):
    assert redirect_target(current, location, POLICY) == expected


@pytest.mark.parametrize(
    ("current", "location", "message"),
    [
        ("https://a.example/x", "http://a.example/y.wav", DOWNGRADE),
        ("https://a.example/x", "HTTP://b.example/y.wav", DOWNGRADE),
        ("https://127.0.0.1/x", "http://127.0.0.1/y.wav", DOWNGRADE),  # even to loopback
        ("https://a.example/x", "ftp://a.example/y.wav", "must be https://"),
        ("https://a.example/x", "file:///etc/passwd", "must be https://"),
        ("https://a.example/x", "https://[::1/y", "must be https://"),
        ("https://a.example/x", "", "redirect without a Location"),
        ("https://a.example/x", None, "redirect without a Location"),
    ],
)
def test_refused_redirects(current, location, message):
    with pytest.raises(BadRefAudio) as info:
        redirect_target(current, location, POLICY)
    assert message in info.value.message


# -- base64 ------------------------------------------------------------------------------------


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


# -- s3:// -------------------------------------------------------------------------------------


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


# The worker's own library (S3_BUCKET=worker, S3_PREFIX=f5-tts) and REF_AUDIO_S3_ALLOW.
SETTINGS = Settings.from_env(
    {"S3_BUCKET": "worker", "REF_AUDIO_S3_ALLOW": "shared/refs, gone, denied"}
)
S3_POLICY = FetchPolicy.from_settings(SETTINGS)
SILENT = wav_bytes(noise(1) * 0)


def test_the_allowed_set_is_the_voice_library_and_the_settings():
    assert S3_POLICY.s3_allow == (
        S3Scope("worker", "f5-tts/voices/"),
        S3Scope("shared", "refs/"),
        S3Scope("gone"),
        S3Scope("denied"),
    )
    assert FetchPolicy.from_settings(Settings(s3_bucket="b", s3_prefix="")).s3_allow == (
        S3Scope("b", "voices/"),
    )
    assert FetchPolicy.from_settings(Settings()).s3_allow == ()


@pytest.fixture
def s3_buckets() -> tuple[str, ...]:
    return ("worker", "shared", "private")


@pytest.fixture
def s3(s3):
    """The conftest's moto client, stocked, with a 403 for bucket "denied"."""
    objects = {
        ("worker", "f5-tts/voices/anna/ref.wav"): AUDIO,
        ("worker", "f5-tts/voices/big.wav"): b"x" * (LIMIT + 1),
        ("worker", "f5-tts/voices/anna/ref.txt"): b"Words, not audio.",
        ("worker", "f5-tts/voices/silent/ref.wav"): SILENT,
        ("worker", "f5-tts/voices.wav"): AUDIO,
        ("worker", "f5-tts/other/ref.wav"): AUDIO,
        ("shared", "refs/a.wav"): AUDIO,
        ("shared", "refs-old/a.wav"): AUDIO,
        ("private", "recording.wav"): AUDIO,
    }
    for (bucket, key), body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return _DeniedFor(s3, "denied")


class _DeniedFor:
    """moto enforces no bucket policy: a 403 for one bucket, the rest passed through."""

    def __init__(self, client, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    def get_object(self, **kwargs):
        if kwargs["Bucket"] == self.bucket:
            error = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
            raise ClientError(error, "GetObject")
        return self.client.get_object(**kwargs)


def s3_fetcher(client, policy: FetchPolicy = S3_POLICY) -> RefAudioFetcher:
    return RefAudioFetcher(
        FetchPolicy(max_bytes=LIMIT, s3_allow=policy.s3_allow), s3_client_factory=lambda: client
    )


@pytest.mark.parametrize(
    "ref", ["s3://worker/f5-tts/voices/anna/ref.wav", "s3://shared/refs/a.wav"]
)
def test_allowed_s3_references(s3, ref):
    assert s3_fetcher(s3).fetch(ref, "s3") == AUDIO
    assert s3_fetcher(s3).voice(ref, "s3", "Words.").text == "Words."


UNUSABLE = [
    "s3://private/recording.wav",  # another bucket, not listed
    "s3://worker/f5-tts/other/ref.wav",  # the worker's bucket, outside the library
    "s3://worker/f5-tts/voices.wav",  # a prefix is whole segments
    "s3://shared/refs-old/a.wav",
    "s3://worker/f5-tts/voices/../other/ref.wav",  # a store that normalises would read other/
    "s3://worker/f5-tts/voices/./anna/ref.wav",
    "s3://worker/f5-tts/voices//anna/ref.wav",
    "s3://worker/f5-tts/voices/nobody.wav",  # missing
    "s3://gone/a.wav",  # no such bucket
    "s3://denied/a.wav",  # access denied
    "s3://worker/f5-tts/voices/big.wav",  # too large
]


@pytest.mark.parametrize("ref", UNUSABLE)
def test_every_unusable_s3_object_gets_the_same_message(s3, ref, caplog):
    with caplog.at_level(logging.DEBUG, "f5worker.job.fetch"), pytest.raises(BadRefAudio) as info:
        s3_fetcher(s3).fetch(ref, "s3")
    assert info.value.message == S3_UNUSABLE and info.value.code == "BAD_REF_AUDIO"
    assert info.value.__cause__ is None and not info.value.retryable
    # The reason is for the operator, at DEBUG only.
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@pytest.mark.parametrize(
    "ref", ["s3://worker/f5-tts/voices/anna/ref.txt", "s3://worker/f5-tts/voices/silent/ref.wav"]
)
def test_an_s3_object_that_is_not_usable_audio_gets_the_same_message(s3, ref):
    with pytest.raises(BadRefAudio) as info:
        s3_fetcher(s3).voice(ref, "s3", "Words.")
    assert info.value.message == S3_UNUSABLE


def test_a_reference_outside_the_allowed_set_makes_no_s3_request():
    made = []

    def factory():
        made.append(1)
        raise AssertionError("no S3 client may be made")

    fetcher = RefAudioFetcher(S3_POLICY, s3_client_factory=factory)
    for ref in UNUSABLE[:7]:
        with pytest.raises(BadRefAudio) as info:
            fetcher.fetch(ref, "s3")
        assert info.value.message == S3_UNUSABLE
    assert made == []


def test_nothing_is_allowed_by_default(s3):
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(s3_client_factory=lambda: s3).fetch("s3://private/recording.wav", "s3")
    assert info.value.message == S3_UNUSABLE


def test_s3_without_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fetcher = s3_fetcher(make_client("http://127.0.0.1:9", "x"))
    with pytest.raises(BadRefAudio) as info:
        fetcher.fetch("s3://shared/refs/a.wav", "s3")
    assert info.value.message == S3_UNUSABLE


def test_unreachable_s3_is_a_retryable_storage_error():
    fetcher = s3_fetcher(make_client("http://127.0.0.1:9", "us-east-1", "k", "s", max_attempts=1))
    with pytest.raises(StorageError) as info:
        fetcher.fetch("s3://shared/refs/a.wav", "s3")
    assert info.value.retryable and info.value.code == "STORAGE_ERROR"
    assert "s3://shared" in info.value.message


def test_s3_refs_need_a_client():
    with pytest.raises(BadRefAudio) as info:
        RefAudioFetcher(S3_POLICY).fetch("s3://worker/f5-tts/voices/a.wav", "s3")
    assert "not enabled" in info.value.message
