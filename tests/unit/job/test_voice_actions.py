"""Voice management jobs (voice.add/list/get/delete) against moto's S3, with the library's
atomicity and cross-worker staleness. No engine: the model's rate is passed in."""

from __future__ import annotations

import io
import json
import threading
import time
from itertools import count

import numpy as np
import pytest
import soundfile as sf
from botocore.exceptions import ClientError, EndpointConnectionError

from f5worker.config import S3Scope
from f5worker.errors import StorageError, VoiceNotFound, WorkerError
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher
from f5worker.job.ref_transcripts import NO_ASR, RefTranscripts
from f5worker.job.voice_actions import VoiceActions, parse_action
from f5worker.job.voice_store import VoiceStore
from f5worker.job.voices import MAX_REF_SECONDS, TAIL_SILENCE_S, VoiceLibrary, default_voice
from f5worker.testing.asr import ScriptedTranscriber
from f5worker.testing.audio import noise, wav_b64, wav_bytes

BUCKET = "voices"
RATE = 24000  # the model's
_prefixes = count()


@pytest.fixture
def s3_buckets() -> tuple[str, ...]:
    return (BUCKET, "elsewhere")


@pytest.fixture
def prefix() -> str:
    """A library of its own per test."""
    return f"lib{next(_prefixes)}"


def library(s3, prefix: str, **kw) -> VoiceLibrary:
    kw.setdefault("writes", True)  # the operator's VOICE_WRITES=on (off by default)
    return VoiceLibrary(BUCKET, prefix, client_factory=lambda: s3, **kw)


def actions(s3, prefix: str, asr=None, **kw) -> VoiceActions:
    """Voice actions on a library of their own; `asr` None: a worker with ASR_MODEL=none."""
    lib = library(s3, prefix, **kw)
    policy = FetchPolicy(
        allow_private_addresses=False, s3_allow=(S3Scope(BUCKET, f"{prefix}/voices/"),)
    )
    fetcher = RefAudioFetcher(policy, s3_client_factory=lambda: s3)
    return VoiceActions(lib, fetcher, RATE, transcripts=RefTranscripts(asr))


def outcome(act: VoiceActions, inp: dict) -> str:
    """ "OK", or the code of the coded error the action raised."""
    try:
        act.run(inp)
    except WorkerError as err:
        return err.code
    return "OK"


def code_of(act: VoiceActions, inp: dict) -> str:
    with pytest.raises(WorkerError) as info:
        act.run(inp)
    return info.value.code


def add(name: str = "anna", audio=None, text: str = "I am Anna.", rate: int = RATE) -> dict:
    audio = noise(2) if audio is None else audio
    return {
        "action": "voice.add",
        "name": name,
        "ref_audio": wav_b64(audio, rate),
        "ref_text": text,
    }


GOOD_AUDIO = wav_b64(noise(2))
BAD_INPUTS = [
    ({"action": "voice.nope"}, "INVALID_INPUT"),
    ({"action": 3}, "INVALID_INPUT"),
    ({"action": None}, "INVALID_INPUT"),
    ({"action": ["voice.list"]}, "INVALID_INPUT"),
    ({"action": "voice.list", "name": "x"}, "INVALID_INPUT"),  # unknown field for list
    ({"action": "voice.get"}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": ""}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": "../etc"}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": "a/b"}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": "x" * 65}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": 7}, "INVALID_INPUT"),
    ({"action": "voice.get", "name": "nobody"}, "VOICE_NOT_FOUND"),
    ({"action": "voice.delete", "name": "nobody"}, "VOICE_NOT_FOUND"),
    ({"action": "voice.delete", "name": "default"}, "INVALID_INPUT"),
    # Without ref_text a clip needs the ASR, off in these actions (ASR_MODEL=none).
    ({"action": "voice.add", "name": "a", "ref_audio": GOOD_AUDIO}, "INVALID_INPUT"),
    ({"action": "voice.add", "name": "a", "ref_text": "t"}, "INVALID_INPUT"),
    (
        {"action": "voice.add", "name": "a", "ref_audio": GOOD_AUDIO, "ref_text": " "},
        "INVALID_INPUT",
    ),
    (add("a") | {"ref_language": "english"}, "INVALID_INPUT"),
    (add("a") | {"ref_language": 1}, "INVALID_INPUT"),
    (
        {"action": "voice.add", "name": "a", "ref_audio": GOOD_AUDIO, "ref_text": "t" * 1001},
        "INVALID_INPUT",
    ),
    (add("a", text="t") | {"speed": 1.0}, "INVALID_INPUT"),  # a synthesis field
    ({"action": "voice.add", "name": "a", "ref_audio": "%%%", "ref_text": "t"}, "BAD_REF_AUDIO"),
    (add("a", audio=np.zeros(RATE, np.float32)), "BAD_REF_AUDIO"),  # silent
    (add("a", audio=noise(0.1)), "BAD_REF_AUDIO"),  # too short
    (
        {"action": "voice.add", "name": "a", "ref_audio": "s3://elsewhere/x.wav", "ref_text": "t"},
        "BAD_REF_AUDIO",
    ),
    (
        {"action": "voice.add", "name": "a", "ref_audio": "https://127.0.0.1/a", "ref_text": "t"},
        "BAD_REF_AUDIO",
    ),
    (add("default"), "VOICE_EXISTS"),
    # Reserved in any case: the built-in voice and OpenAI's stock names (an OpenAI client asking
    # for `alloy` means the default voice, never a clip someone added under that name).
    *[(add(name), "VOICE_EXISTS") for name in ("Default", "DEFAULT", "alloy", "Alloy", "NOVA")],
    *[(add(name), "VOICE_EXISTS") for name in ("shimmer", "ash", "Ballad", "coral", "sage")],
    (add("a") | {"ref_audio": {"b64": 1}}, "INVALID_INPUT"),
    (add("a") | {"ref_text": ["t"]}, "INVALID_INPUT"),
    (add("a") | {"ref_text": "\ud800"}, "INVALID_INPUT"),  # a lone surrogate: not UTF-8
    ({"action": "voice.get", "name": "\ud800"}, "INVALID_INPUT"),
    ({"action": "voice.get\x00", "name": "a"}, "INVALID_INPUT"),
    ({"action": "voice.list", "action2": 1}, "INVALID_INPUT"),
]


@pytest.mark.parametrize(("inp", "code"), BAD_INPUTS)
def test_bad_input_has_its_code_and_changes_nothing(s3, prefix, inp, code):
    act = actions(s3, prefix)
    assert code_of(act, inp) == code
    assert [v["name"] for v in act.run({"action": "voice.list"})["voices"]] == ["default"]


def test_add_list_get_delete(s3, prefix):
    act = actions(s3, prefix)
    # 16 kHz stereo, 20 s of sound between silences: stored mono, 24 kHz, cut to 12 s.
    stereo = np.stack([noise(20, 16000), noise(20, 16000, seed=1)], axis=1)
    padded = np.concatenate([np.zeros((16000, 2), np.float32), stereo])
    added = act.run(add("anna", padded, "Hello, I am Anna.", rate=16000))
    assert added["action"] == "voice.add"
    voice = added["voice"]
    assert voice["name"] == "anna" and voice["transcript_preview"] == "Hello, I am Anna."
    assert voice["duration_s"] == pytest.approx(MAX_REF_SECONDS + TAIL_SILENCE_S, abs=0.02)
    assert voice["created"].endswith("Z")

    listed = act.run({"action": "voice.list"})
    assert listed["count"] == 2 and [v["name"] for v in listed["voices"]] == ["default", "anna"]
    assert listed["voices"][1] == {k: voice[k] for k in listed["voices"][1]}

    got = act.run({"action": "voice.get", "name": "anna"})["voice"]
    assert got["sample_rate"] == RATE and got["transcript"] == "Hello, I am Anna."
    assert got["duration_s"] == voice["duration_s"] and got["created"] == voice["created"]

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])
    manifest_key, audio_key = f"{prefix}/voices/anna/voice.json", keys[0]
    assert keys[1] == manifest_key and audio_key.endswith(".wav")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["audio"] == audio_key.rsplit("/", 1)[1] and manifest["sample_rate"] == RATE
    stored, rate = sf.read(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=audio_key)["Body"].read()))
    assert rate == RATE and stored.ndim == 1

    # A fresh worker's library loads the stored samples as they are (no second preparation).
    loaded = library(s3, prefix).get("anna")
    assert np.array_equal(loaded.audio.samples, stored.astype(np.float32))

    assert act.run({"action": "voice.delete", "name": "anna"}) == {
        "action": "voice.delete",
        "deleted": "anna",
    }
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert code_of(act, {"action": "voice.get", "name": "anna"}) == "VOICE_NOT_FOUND"
    assert code_of(act, {"action": "voice.delete", "name": "anna"}) == "VOICE_NOT_FOUND"


def test_a_voice_added_from_a_clip_alone_keeps_the_transcript_of_what_was_kept(s3, prefix):
    """No ref_text: the clip is trimmed and clipped first, that is what is transcribed (as
    upstream transcribes the clipped clip), and the transcript is stored as if it was sent."""
    asr = ScriptedTranscriber(["  Hello,   I am Anna. "], language="de")
    act = actions(s3, prefix, asr)
    padded = np.concatenate([np.zeros(16000, np.float32), noise(20, 16000)])
    inp = add("anna", padded, rate=16000)
    del inp["ref_text"]
    added = act.run(inp | {"ref_language": "DE"})["voice"]
    assert (added["transcript"], added["transcript_source"], added["language"]) == (
        "Hello, I am Anna.",
        "asr",
        "de",
    )
    heard_samples, heard_rate, heard_language, _ = asr.calls[0]
    # What was heard: the clip without its leading silence, cut to 12 s, at the clip's rate.
    assert (heard_rate, heard_language) == (16000, "de")
    assert heard_samples == pytest.approx((MAX_REF_SECONDS + TAIL_SILENCE_S) * 16000, abs=400)
    got = act.run({"action": "voice.get", "name": "anna"})["voice"]
    assert (got["transcript"], got["transcript_source"]) == ("Hello, I am Anna.", "asr")
    fresh = library(s3, prefix).entry("anna")  # stored with the voice, not only in memory
    assert (fresh.voice.text, fresh.transcript_source) == ("Hello, I am Anna.", "asr")
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/voices/anna/voice.json")["Body"].read()
    )
    assert manifest["transcript_source"] == "asr"

    sent = act.run(add("bob", text="I am Bob.") | {"ref_text": "I am Bob."})["voice"]
    assert sent["transcript_source"] == "request" and "language" not in sent
    assert len(asr.calls) == 1  # a transcript sent wins: no ASR
    got = act.run({"action": "voice.get", "name": "bob"})["voice"]
    assert got["transcript_source"] == "request"


def test_a_manifest_from_before_transcript_source_reads_as_a_transcript_sent(s3, prefix):
    act = actions(s3, prefix)
    act.run(add("anna"))
    key = f"{prefix}/voices/anna/voice.json"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    del manifest["transcript_source"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    fresh = actions(s3, prefix)  # another worker: nothing cached
    got = fresh.run({"action": "voice.get", "name": "anna"})["voice"]
    assert (got["transcript"], got["transcript_source"]) == ("I am Anna.", "request")


@pytest.mark.parametrize("heard", ["", "   ", "[Music]", "♪ ♪", "(applause) .", "a"])
def test_a_clip_without_words_is_bad_ref_audio_asking_for_ref_text(s3, prefix, heard):
    act = actions(s3, prefix, ScriptedTranscriber([heard]))
    inp = add("anna")
    del inp["ref_text"]
    with pytest.raises(WorkerError) as info:
        act.run(inp)
    assert info.value.code == "BAD_REF_AUDIO" and "ref_text" in info.value.message
    assert [v["name"] for v in act.run({"action": "voice.list"})["voices"]] == ["default"]


def test_without_asr_a_clip_alone_is_refused_before_it_is_fetched(s3, prefix):
    act = actions(s3, prefix)
    inp = {"action": "voice.add", "name": "a", "ref_audio": "https://127.0.0.1/a.wav"}
    with pytest.raises(WorkerError) as info:
        act.run(inp)  # a fetch would have been BAD_REF_AUDIO (a private address)
    assert (info.value.code, info.value.message) == ("INVALID_INPUT", NO_ASR)
    assert "ASR_MODEL" in NO_ASR and "ref_text" in NO_ASR


def test_a_name_is_never_silently_replaced(s3, prefix):
    act = actions(s3, prefix)
    act.run(add("anna"))
    assert code_of(act, add("anna", text="Someone else.")) == "VOICE_EXISTS"
    assert act.run({"action": "voice.get", "name": "anna"})["voice"]["transcript"] == "I am Anna."
    act.run({"action": "voice.delete", "name": "anna"})
    act.run(add("anna", text="Someone else."))  # after a delete, the name is free again


def test_writes_switched_off_or_no_library(s3, prefix):
    act = actions(s3, prefix, writes=False)
    assert code_of(act, add("anna")) == "VOICE_WRITES_DISABLED"
    assert code_of(act, {"action": "voice.delete", "name": "anna"}) == "VOICE_WRITES_DISABLED"
    assert act.run({"action": "voice.list"})["count"] == 1  # reads still work

    bare = VoiceActions(VoiceLibrary(None), RefAudioFetcher(), RATE)
    assert code_of(bare, add("anna")) == "VOICE_WRITES_DISABLED"
    assert [v["name"] for v in bare.run({"action": "voice.list"})["voices"]] == ["default"]
    default = bare.run({"action": "voice.get", "name": "default"})["voice"]
    assert default["transcript"] == default_voice().text


def test_the_library_is_bounded(s3, prefix):
    act = actions(s3, prefix, max_voices=2)
    act.run(add("a"))
    act.run(add("b"))
    assert code_of(act, add("c")) == "VOICE_LIMIT_REACHED"
    act.run({"action": "voice.delete", "name": "a"})
    act.run(add("c"))


def test_consent_is_stored_shown_and_required_where_the_operator_says(s3, prefix):
    act = actions(s3, prefix)
    record = "Anna Berg, signed release 2026-11-02, contracts/anna.pdf"
    added = act.run(add("anna") | {"consent": f"  {record}\n"})["voice"]
    assert added["consent"] == record  # one line, as stored
    assert act.run({"action": "voice.get", "name": "anna"})["voice"]["consent"] == record
    listed = act.run({"action": "voice.list"})["voices"]
    assert [v["consent"] for v in listed] == ["", record]  # default: built in, no record
    act.run(add("bob"))  # not required here: an add without one is stored with ""
    assert act.run({"action": "voice.get", "name": "bob"})["voice"]["consent"] == ""

    strict = VoiceActions(library(s3, prefix), act.fetcher, RATE, require_consent=True)
    assert code_of(strict, add("carl")) == "CONSENT_REQUIRED"
    assert code_of(strict, add("carl") | {"consent": "   "}) == "CONSENT_REQUIRED"
    assert code_of(strict, add("carl") | {"consent": "x" * 501}) == "INVALID_INPUT"
    assert strict.run(add("carl") | {"consent": "Carl, by email"})["voice"]["consent"]


def test_the_limit_holds_exactly_for_parallel_adds_on_one_worker(s3, prefix):
    act = actions(s3, prefix, max_voices=3)
    codes: list[str] = []

    def one(n: int) -> None:
        codes.append(outcome(act, add(f"v{n}")))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == ["OK"] * 3 + ["VOICE_LIMIT_REACHED"] * 5
    assert len(act.run({"action": "voice.list"})["voices"]) == 1 + 3


def test_adds_and_deletes_of_one_name_are_ordered_and_deleted_means_gone(s3, prefix):
    """Racing add/delete pairs on one worker: each answer is true when it is given."""
    act = actions(s3, prefix)
    answers: list[tuple[str, str]] = []

    def add_then_delete(n: int) -> None:
        answers.append(("add", outcome(act, add("race"))))
        answers.append(("delete", outcome(act, {"action": "voice.delete", "name": "race"})))

    threads = [threading.Thread(target=add_then_delete, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    adds = [code for kind, code in answers if kind == "add"]
    deletes = [code for kind, code in answers if kind == "delete"]
    assert set(adds) <= {"OK", "VOICE_EXISTS"} and set(deletes) <= {"OK", "VOICE_NOT_FOUND"}
    assert adds.count("OK") == deletes.count("OK")  # every voice added was deleted once
    assert [v["name"] for v in act.run({"action": "voice.list"})["voices"]] == ["default"]


def test_hand_uploaded_voices_are_listed_and_deletable(s3, prefix):
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/old/ref.wav", Body=wav_bytes(noise(2)))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/old/ref.txt", Body=b"An old voice.")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/half/ref.wav", Body=wav_bytes(noise(2)))
    act = actions(s3, prefix)
    [_, old] = act.run({"action": "voice.list"})["voices"]
    assert old["name"] == "old" and old["duration_s"] is None
    assert old["transcript_preview"] == "An old voice." and old["created"].endswith("Z")
    assert act.run({"action": "voice.get", "name": "old"})["voice"]["duration_s"] > 1.9
    assert code_of(act, {"action": "voice.get", "name": "half"}) == "VOICE_NOT_FOUND"
    act.run({"action": "voice.delete", "name": "old"})
    assert act.run({"action": "voice.list"})["count"] == 1


def test_action_names_are_read_like_the_schemas_choices():
    action = parse_action({"action": "VOICE.GET ", "name": "a"})
    assert action.action == "voice.get"  # spelled like the schema's other choices


def test_two_workers_share_one_library_with_bounded_staleness(s3, prefix):
    """Worker B caches a voice; A deletes it: B serves its copy for at most the TTL, then
    sees the delete. A voice A adds is seen by B at once (misses are never cached)."""
    now = [0.0]
    a = actions(s3, prefix)
    b = library(s3, prefix, cache_ttl_s=30, clock=lambda: now[0])
    with pytest.raises(VoiceNotFound):
        b.get("anna")
    a.run(add("anna"))
    assert b.get("anna").text == "I am Anna."  # seen at once
    a.run({"action": "voice.delete", "name": "anna"})
    now[0] = 29.0
    assert b.get("anna").text == "I am Anna."  # within the TTL: the cached copy
    now[0] = 30.0
    with pytest.raises(VoiceNotFound):
        b.get("anna")
    a.run(add("anna", text="A new Anna."))
    assert b.get("anna").text == "A new Anna."
    a.run({"action": "voice.delete", "name": "anna"})
    a.run(add("anna", text="A third Anna."))
    now[0] = 45.0  # still within the TTL of the last check: the old copy
    assert b.get("anna").text == "A new Anna."
    now[0] = 61.0  # replaced: its version changed, so B reloads
    assert b.get("anna").text == "A third Anna."


def test_a_reader_racing_adds_and_deletes_never_sees_half_a_voice(s3, prefix):
    """Each version's transcript names its audio's length; a reader that checks S3 on every
    use (TTL 0) must get a matching pair or VOICE_NOT_FOUND, never anything else."""
    writer = actions(s3, prefix)
    reader = library(s3, prefix, cache_ttl_s=0)
    stop = threading.Event()
    seen: dict[str, int] = {"voices": 0, "missing": 0}
    problems: list[str] = []

    def read() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                voice = reader.get("racer")
            except VoiceNotFound:
                seen["missing"] += 1
                continue
            except Exception as exc:
                problems.append(repr(exc))
                continue
            seen["voices"] += 1
            samples = int(voice.text.split()[1])
            if abs(voice.audio.samples.size - samples) > 2:
                problems.append(f"{voice.text} with {voice.audio.samples.size} samples")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(12):
            seconds = 1.0 + 0.25 * i
            voice_samples = int(seconds * RATE) + int(TAIL_SILENCE_S * RATE)
            writer.run(add("racer", noise(seconds, seed=i), f"version {voice_samples} ."))
            time.sleep(0.05)
            writer.run({"action": "voice.delete", "name": "racer"})
    finally:
        stop.set()
        thread.join(timeout=130)
    assert not problems
    assert seen["voices"] > 0 and seen["missing"] > 0


def test_a_store_reader_racing_deletes_gets_a_whole_voice_or_none(s3, prefix):
    store = VoiceStore(BUCKET, prefix, lambda: s3)
    for i in range(5):
        manifest = {"transcript": f"t{i}", "duration_s": 1.0, "sample_rate": RATE, "created": ""}
        assert store.create("v", wav_bytes(noise(1, seed=i)), manifest)
        got = store.read("v", 10_000_000)
        assert got is not None and got.transcript == f"t{i}" and got.sample_rate == RATE
        assert not store.create("v", b"other", manifest)  # taken: nothing left behind
        assert store.delete("v") and store.read("v", 10_000_000) is None
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)


def test_preview_is_bounded(s3, prefix):
    act = actions(s3, prefix)
    long_text = "word " * 100
    act.run(add("long", text=long_text))
    [_, info] = act.run({"action": "voice.list"})["voices"]
    assert len(info["transcript_preview"]) == 80 and info["transcript_preview"].endswith("…")
    assert (
        act.run({"action": "voice.get", "name": "long"})["voice"]["transcript"] == long_text.strip()
    )


def test_results_are_json():
    item = VoiceActions(VoiceLibrary(None), RefAudioFetcher(), RATE).run({"action": "voice.list"})
    assert json.loads(json.dumps(item)) == item


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        b"[]",
        json.dumps(
            {
                "audio": "../../other/key.wav",
                "transcript": "t",
                "created": "",
                "sample_rate": RATE,
                "duration_s": 1.0,
            }
        ).encode(),
        json.dumps(
            {
                "audio": "0123456789abcdef.wav",
                "transcript": 5,
                "created": "",
                "sample_rate": RATE,
                "duration_s": 1.0,
            }
        ).encode(),
        b"{" + b" " * 20_000 + b"}",
    ],
)
def test_a_manifest_edited_by_hand_is_a_voice_not_found(s3, prefix, manifest):
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/odd/voice.json", Body=manifest)
    act = actions(s3, prefix)
    act.run(add("anna"))
    for job in ({"action": "voice.get", "name": "odd"}, None):
        with pytest.raises(WorkerError) as info:
            if job is None:  # synthesis reaches it through the library
                library(s3, prefix).get("odd")
            else:
                act.run(job)
        assert info.value.code == "VOICE_NOT_FOUND" and "manifest" in info.value.message
        assert "unreadable" in info.value.message
    listed = act.run({"action": "voice.list"})["voices"]  # the others are still listed
    assert [v["name"] for v in listed] == ["default", "anna"]
    act.run({"action": "voice.delete", "name": "odd"})  # and it can be removed
    assert code_of(act, {"action": "voice.get", "name": "odd"}) == "VOICE_NOT_FOUND"


class Outage:
    """An S3 client that can be cut off: every call then fails as an unreachable endpoint."""

    def __init__(self, client) -> None:
        self.client, self.down = client, False

    def __getattr__(self, name: str):
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")
        return getattr(self.client, name)


def test_a_cached_voice_outlives_an_s3_outage(s3, prefix, caplog):
    now = [0.0]
    actions(s3, prefix).run(add("anna"))
    s3_link = Outage(s3)
    lib = VoiceLibrary(
        BUCKET, prefix, client_factory=lambda: s3_link, cache_ttl_s=1, clock=lambda: now[0]
    )
    voice = lib.get("anna")
    s3_link.down = True
    now[0] = 5.0  # due for its check, which cannot reach S3
    assert lib.get("anna") is voice
    assert "S3 not reachable" in caplog.text
    with pytest.raises(WorkerError) as info:
        lib.get("bert")  # not cached: the outage is the job's error
    assert info.value.code == "STORAGE_ERROR" and info.value.retryable


class Recorder:
    """An S3 client that records each call's name and arguments."""

    def __init__(self, client) -> None:
        self.client, self.calls = client, []

    def __getattr__(self, name: str):
        method = getattr(self.client, name)

        def call(*args, **kw):
            self.calls.append((name, kw))
            return method(*args, **kw)

        return call if callable(method) else method


def test_a_listing_reads_at_most_4_kb_of_a_hand_made_ref_txt(s3, prefix):
    for name, text in (("big", b"A long transcript. " * 100_000), ("empty", b"")):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/{name}/ref.wav", Body=b"RIFF")
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/{name}/ref.txt", Body=text)
    client = Recorder(s3)
    infos = VoiceStore(BUCKET, prefix, lambda: client).list()
    assert [(i.name, i.transcript_preview[:18]) for i in infos] == [
        ("big", "A long transcript."),
        ("empty", ""),
    ]
    gets = [kw for name, kw in client.calls if name == "get_object"]
    assert len(gets) == 2 and all(kw["Range"] == "bytes=0-4095" for kw in gets)


class Denied(Outage):
    """An S3 client whose credentials lose access: every call then answers 403 AccessDenied,
    as AWS does for a missing key to credentials without s3:ListBucket."""

    def __getattr__(self, name: str):
        if self.down:
            error = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}

            def deny(*_args, **_kw):
                raise ClientError(error, name)

            return deny
        return getattr(self.client, name)


def test_a_403_is_no_outage_and_never_serves_the_cached_copy(s3, prefix):
    now = [0.0]
    actions(s3, prefix).run(add("anna"))
    s3_link = Denied(s3)
    lib = VoiceLibrary(
        BUCKET, prefix, client_factory=lambda: s3_link, cache_ttl_s=1, clock=lambda: now[0]
    )
    lib.get("anna")
    s3_link.down = True
    now[0] = 5.0  # due for its check: S3 answers 403
    with pytest.raises(WorkerError) as info:
        lib.get("anna")
    assert info.value.code == "STORAGE_ERROR" and not info.value.retryable
    assert "s3:ListBucket" in info.value.message and lib.cached_names() == []


class ReplacedBeforeDelete:
    """An S3 client on which another worker deletes and re-adds the voice just before this
    worker's DELETE of its manifest arrives."""

    def __init__(self, client, replace) -> None:
        self.client, self.replace = client, replace

    def delete_object(self, **kw):
        if kw["Key"].endswith("/voice.json") and self.replace is not None:
            replace, self.replace = self.replace, None
            replace()
        return self.client.delete_object(**kw)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_a_delete_never_removes_a_voice_replaced_meanwhile(s3, prefix):
    other = actions(s3, prefix)
    other.run(add("anna"))

    def replace() -> None:
        other.run({"action": "voice.delete", "name": "anna"})
        other.run(add("anna", text="A new Anna."))

    client = ReplacedBeforeDelete(s3, replace)
    lib = VoiceLibrary(BUCKET, prefix, client_factory=lambda: client, writes=True)
    with pytest.raises(WorkerError) as info:
        lib.delete("anna")
    assert info.value.code == "VOICE_CHANGED" and not info.value.retryable
    assert other.run({"action": "voice.get", "name": "anna"})["voice"]["transcript"] == (
        "A new Anna."
    )
    lib.delete("anna")  # asked again, it deletes the version it now reads
    assert code_of(actions(s3, prefix), {"action": "voice.get", "name": "anna"}) == (
        "VOICE_NOT_FOUND"
    )
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)


class SlowReads:
    """An S3 client whose GETs take `delay` seconds each; records how many overlap."""

    def __init__(self, client, delay: float) -> None:
        self.client, self.delay = client, delay
        self.lock = threading.Lock()
        self.running = self.most = self.gets = 0

    def get_object(self, **kw):
        with self.lock:
            self.running += 1
            self.gets += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay)
            return self.client.get_object(**kw)
        finally:
            with self.lock:
                self.running -= 1

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_a_listing_reads_manifests_a_few_at_a_time_then_remembers_them(s3, prefix):
    act = actions(s3, prefix)
    for i in range(20):
        act.run(add(f"v{i:02}"))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/odd/voice.json", Body=b"not json")
    client = SlowReads(s3, delay=0.1)
    store = VoiceStore(BUCKET, prefix, lambda: client)
    started = time.monotonic()
    names = [info.name for info in store.list()]
    assert names == [f"v{i:02}" for i in range(20)]  # sorted; the broken one skipped
    assert client.gets == 21 and 1 < client.most <= 16
    assert time.monotonic() - started < 21 * 0.1 / 2
    assert [info.name for info in store.list()] == names and client.gets == 22  # only "odd"


def test_a_listing_is_bounded_in_time(s3, prefix, monkeypatch):
    monkeypatch.setattr("f5worker.job.voice_store.LIST_TIMEOUT_S", 0.2)
    act = actions(s3, prefix)
    act.run(add("anna"))
    store = VoiceStore(BUCKET, prefix, lambda: SlowReads(s3, delay=1.0))
    with pytest.raises(StorageError) as info:
        store.list()
    assert info.value.retryable and "not read within 0.2 s" in info.value.reason
