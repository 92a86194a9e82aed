"""Voice management as jobs: `{"action": "voice.add" | "voice.list" | "voice.get" |
"voice.delete", ...}` beside synthesis (an input without `action` is a synthesis request).

Each action declares its fields in ACTIONS with schema.Field, so validation, bounds, unknown-field
refusal and error codes are those of a synthesis request. The result is one JSON item. Never
imports torch: the model's sample rate is passed in.

voice.add normalises the reference once, here: fetched like any `ref_audio` (base64, https or
s3://, with the same limits and checks), decoded to mono, trimmed and cut to at most 12 s of
sound at a sentence end its transcript agrees on (the bound of the `best` preset, so every preset
can use it; `fast` cuts further per job where a sentence end allows), and resampled to the
model's rate. A job that names the voice then decodes one WAV and does nothing else to it.
Sent without `ref_text` (or with a blank one), the clip is transcribed after that trimming
(ref_transcripts.py) and the transcript is stored with the voice as if it had been sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from f5worker.errors import ConsentRequired, InvalidInput
from f5worker.job.fetch import RefAudioFetcher
from f5worker.job.ref_transcripts import RefTranscripts
from f5worker.job.schema import (
    FIELDS,
    MAX_REF_AUDIO_B64_CHARS,
    MAX_REF_TEXT_CHARS,
    VOICE_NAME,
    Field,
    language_code,
    parse_fields,
    ref_kind,
)
from f5worker.job.voices import VoiceLibrary, normalise_voice

VOICE_ADD = "voice.add"
VOICE_LIST = "voice.list"
VOICE_GET = "voice.get"
VOICE_DELETE = "voice.delete"
_ACTION = Field(
    "action",
    str,
    None,
    "`voice.add`, `voice.list`, `voice.get` or `voice.delete`; absent: synthesis.",
    choices=(VOICE_ADD, VOICE_LIST, VOICE_GET, VOICE_DELETE),
    required=True,
)
_NAME = Field(
    "name",
    str,
    None,
    "Voice name: 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit.",
    max_len=64,
    required=True,
)
_REF_AUDIO = Field(
    "ref_audio",
    str,
    None,
    "The reference: base64 audio (WAV, FLAC, OGG, MP3), an `https://` URL or `s3://bucket/key`, "
    "as for synthesis.",
    max_len=MAX_REF_AUDIO_B64_CHARS,
    required=True,
)
_REF_TEXT = Field(
    "ref_text",
    str,
    None,
    "Transcript of `ref_audio`; unset or blank: transcribed by the worker's ASR (`ASR_MODEL`).",
    max_len=MAX_REF_TEXT_CHARS,
)
_REF_LANGUAGE = next(f for f in FIELDS if f.name == "ref_language")
MAX_CONSENT_CHARS = 500
_CONSENT = Field(
    "consent",
    str,
    None,
    "Who consented to this voice being cloned, and how (free text: a name, a date, where the "
    "signed release is); stored with the voice, shown by `voice.get` and `voice.list`. "
    "Required when the worker sets `VOICE_REQUIRE_CONSENT=on`.",
    max_len=MAX_CONSENT_CHARS,
)
ACTIONS: dict[str, tuple[Field, ...]] = {
    VOICE_ADD: (_ACTION, _NAME, _REF_AUDIO, _REF_TEXT, _REF_LANGUAGE, _CONSENT),
    VOICE_LIST: (_ACTION,),
    VOICE_GET: (_ACTION, _NAME),
    VOICE_DELETE: (_ACTION, _NAME),
}


@dataclass(frozen=True)
class VoiceAction:
    action: str
    name: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    ref_language: str | None = None
    consent: str | None = None


def is_action(raw: Any) -> bool:
    """Whether a job input is a voice action rather than a synthesis request."""
    return isinstance(raw, Mapping) and "action" in raw


def parse_action(raw: Mapping[str, Any]) -> VoiceAction:
    """Validate an action input; raise a coded InvalidInput subclass on the first problem."""
    action = parse_fields((_ACTION,), {"action": raw.get("action")})["action"]
    values = parse_fields(ACTIONS[action], raw)
    name = values.get("name")
    if name is not None and not VOICE_NAME.fullmatch(name):
        raise InvalidInput("name must be 1-64 letters, digits, '.', '_' or '-'")
    if "ref_language" in values:
        values["ref_language"] = language_code(values["ref_language"])
    return VoiceAction(**values)


class VoiceActions:
    """Runs voice actions against one library; `sample_rate` is the model's."""

    def __init__(
        self,
        library: VoiceLibrary,
        fetcher: RefAudioFetcher,
        sample_rate: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        require_consent: bool = False,
        transcripts: RefTranscripts | None = None,
    ) -> None:
        self.library = library
        self.transcripts = transcripts or RefTranscripts(None)
        self.fetcher = fetcher
        self.sample_rate = sample_rate
        self.require_consent = require_consent
        self._now = now
        self._run: dict[str, Callable[[VoiceAction], dict[str, Any]]] = {
            VOICE_ADD: self._add,
            VOICE_LIST: self._list,
            VOICE_GET: self._get,
            VOICE_DELETE: self._delete,
        }

    def run(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The action's result item; a failure is a coded WorkerError."""
        action = parse_action(raw)
        return {"action": action.action} | self._run[action.action](action)

    def _add(self, action: VoiceAction) -> dict[str, Any]:
        assert action.name and action.ref_audio  # required fields
        self.library.check_writable()  # before any download
        consent = " ".join((action.consent or "").split())
        if self.require_consent and not consent:
            raise ConsentRequired(
                "this worker records consent for every voice (VOICE_REQUIRE_CONSENT): send "
                "`consent`, who agreed to the clone and how"
            )
        text = (action.ref_text or "").strip()
        if not text:
            self.transcripts.require()  # before any download
        ref = action.ref_audio
        voice = self.fetcher.voice(ref, ref_kind(ref), text)
        heard = {}
        if not text:  # the trimmed clip is what is stored: its transcript goes with it
            voice, transcript = self.transcripts.voice_with_text(voice, action.ref_language)
            heard = {"transcript_source": "asr", "language": transcript.language}
        voice = normalise_voice(voice, self.sample_rate)
        created = self._now().isoformat(timespec="seconds").replace("+00:00", "Z")
        source = heard or {"transcript_source": "request"}
        info = self.library.add(action.name, voice, created, consent, source["transcript_source"])
        return {"voice": asdict(info) | {"transcript": voice.text} | source}

    def _list(self, _action: VoiceAction) -> dict[str, Any]:
        voices = [asdict(info) for info in self.library.list_voices()]
        return {"voices": voices, "count": len(voices)}

    def _get(self, action: VoiceAction) -> dict[str, Any]:
        assert action.name
        entry = self.library.entry(action.name)
        return {
            "voice": {
                "name": action.name,
                "duration_s": round(entry.voice.audio.duration_s, 3),
                "created": entry.created,
                "transcript": entry.voice.text,
                "sample_rate": entry.voice.audio.sample_rate,
                "consent": entry.consent,
                "transcript_source": entry.transcript_source,
            }
        }

    def _delete(self, action: VoiceAction) -> dict[str, Any]:
        assert action.name
        self.library.delete(action.name)
        return {"deleted": action.name}
