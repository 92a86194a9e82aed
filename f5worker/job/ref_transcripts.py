"""Transcripts for references sent without `ref_text`: the ASR companion's, cached by content.

A reference is transcribed after it was trimmed and clipped (voices.prepare_voice), as upstream
transcribes the clipped clip, so the transcript says what the model will hear. The cache key is
a hash of those samples, their rate and the language asked for: the same clip sent again (by
base64, URL or S3, by this job or another) is transcribed once per worker. The cache is a
bounded LRU of short strings (MAX_ENTRIES of at most a few hundred characters: well under 1 MB);
concurrent requests for one clip wait for one transcription instead of running it twice. A
failure is not cached: the next request tries again.

The ASR runs on the calling job thread, never the torch thread: it is not torch (CTranslate2),
and the torch thread's time belongs to synthesis.

A transcript with (nearly) no words (music, noise, a clip the recogniser cannot read) is
BAD_REF_AUDIO asking for `ref_text`: F5-TTS given a clip and no words to align it with speaks
noise, which is worse than a clear refusal. With the companion off (ASR_MODEL=none) a
reference without `ref_text` is refused as before, saying how to get either.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from f5worker.asr.transcript import Transcriber, Transcript
from f5worker.audio import Voice
from f5worker.errors import BadRefAudio, InvalidInput

MAX_ENTRIES = 1024
MIN_WORD_CHARS = 2  # letters or digits a transcript needs to be text at all
NO_ASR = (
    "ref_text is required with ref_audio on this worker: send the clip's transcript as "
    "ref_text, or enable reference transcription (ASR_MODEL)"
)
UNHEARD = (
    "no speech was recognised in ref_audio (silence, music or noise?): send a clip of clear "
    "speech, or its transcript as ref_text"
)
# What recognisers write for sounds that are not words: [Music], (applause), ♪ ... ♪
_NOT_WORDS = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")
_WORD_CHAR = re.compile(r"[^\W_]")


@dataclass(frozen=True)
class RefTranscript:
    """The transcript a reference got. seconds: this request's wall time for it (0 when it
    came from the cache); cached: another request had transcribed the same clip."""

    text: str
    language: str
    seconds: float
    cached: bool


class RefTranscripts:
    """The worker's reference transcriber and its cache; `asr` None: the companion is off."""

    def __init__(self, asr: Transcriber | None, max_entries: int = MAX_ENTRIES) -> None:
        self.asr = asr
        self._max = max_entries
        self._done: OrderedDict[str, Transcript] = OrderedDict()
        self._running: dict[str, Future[Transcript]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.asr is not None

    def require(self) -> None:
        """The refusal for a reference without text when there is nothing to transcribe it;
        called before the clip is fetched."""
        if self.asr is None:
            raise InvalidInput(NO_ASR)

    def voice_with_text(self, voice: Voice, language: str | None) -> tuple[Voice, RefTranscript]:
        """The prepared voice with its transcript as its text."""
        heard = self.transcribe(voice.audio.samples, voice.audio.sample_rate, language)
        return Voice(voice.audio, heard.text, name=voice.name), heard

    def transcribe(self, samples: np.ndarray, rate: int, language: str | None) -> RefTranscript:
        """The clip's transcript, from the cache or the ASR. Raises BAD_REF_AUDIO when it holds
        no words, and the ASR's own coded errors (weights missing, ...) unchanged."""
        self.require()
        started = time.perf_counter()
        transcript, cached = self._lookup(
            content_key(samples, rate, language), samples, rate, language
        )
        text = " ".join(transcript.text.split())
        if not has_words(text):
            raise BadRefAudio(UNHEARD)
        seconds = 0.0 if cached else time.perf_counter() - started
        return RefTranscript(text, transcript.language, seconds, cached)

    def cached_count(self) -> int:
        with self._lock:
            return len(self._done)

    def _lookup(
        self, key: str, samples: np.ndarray, rate: int, language: str | None
    ) -> tuple[Transcript, bool]:
        with self._lock:
            done = self._done.get(key)
            if done is not None:
                self._done.move_to_end(key)
                return done, True
            running = self._running.get(key)
            mine = running is None
            if running is None:
                running = self._running[key] = Future()
        if not mine:  # another job is transcribing this clip: its answer (or error) is ours
            return running.result(), True
        try:
            assert self.asr is not None  # require() checked
            transcript = self.asr.transcribe(samples, rate, language=language)
        except BaseException as exc:
            with self._lock:
                del self._running[key]
            running.set_exception(exc)
            raise
        with self._lock:
            del self._running[key]
            self._done[key] = transcript
            while len(self._done) > self._max:
                self._done.popitem(last=False)
        running.set_result(transcript)
        return transcript, False


def content_key(samples: np.ndarray, rate: int, language: str | None) -> str:
    """A clip's identity: its samples as float32, its rate and the language asked for."""
    digest = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    digest.update(f"|{rate}|{language or ''}".encode())
    return digest.hexdigest()


def has_words(text: str) -> bool:
    """Whether a transcript holds at least MIN_WORD_CHARS letters or digits outside the
    bracketed sound labels recognisers write for music and noise."""
    return len(_WORD_CHAR.findall(_NOT_WORDS.sub(" ", text))) >= MIN_WORD_CHARS
