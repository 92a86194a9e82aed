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
