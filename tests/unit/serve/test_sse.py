"""Server-sent event framing of the streamed speech."""

from __future__ import annotations

import base64
import json

from f5worker.serve.http import sse


def test_sse_events_are_data_lines_with_a_type():
    event = sse.delta(b"\x00\x01")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:]) == {
        "type": "speech.audio.delta",
        "audio": base64.b64encode(b"\x00\x01").decode(),
    }
    done = json.loads(sse.done(characters=10, samples=256 * 94)[6:])
    assert done["usage"] == {"input_tokens": 10, "output_tokens": 94, "total_tokens": 104}


def test_fields_beside_usage_go_on_the_done_event_itself():
    beside = {"ref_text_used": "Héllo, wörld.", "ref_text_source": "asr", "ref_language": "de"}
    done = json.loads(sse.done(3, 256, {"audio_s": 0.01}, beside)[6:])
    assert done["type"] == "speech.audio.done"
    assert {k: done[k] for k in beside} == beside
    assert done["usage"]["audio_s"] == 0.01 and "ref_text_used" not in done["usage"]
