"""WS /v1/audio/speech/stream: text sent as it is written, audio sent as each sentence is made.

A client (a voice agent relaying its LLM's deltas) sends `session.config`, then `input.text`
deltas and `input.done` (ws_protocol.py). A sentence splitter (job/sentences.py) finds each
sentence as soon as it is complete, and the session synthesizes it at once as a speech request
of its own: Worker.prepare_request, then Worker.pieces, the path of `POST /v1/audio/speech`, so
each sentence goes through the engine's scheduler with a WorkTag of its own and its first chunk
is a "first" item (it does not wait behind another request's page). Sentences are made one
after the other, in order; their audio is one stream per utterance in `response_format` (the
binary frames of an utterance concatenate to one file), framed by JSON events.

Two tasks per session: the reader (messages, the idle deadline, the splitter) and the speaker
(a slot, then each sentence: prepare in the pool, pieces stepped one ahead of the sender by
speech.AudioStream, every send within HTTP_WRITE_TIMEOUT_S). Either one's failure ends both:
an `error` event with the coded error (when the client can still read it) and the close.

Bounds, per message and per session: HTTP_WS_MAX_MESSAGE_BYTES per message (session.config up
to the body bound), the request text limit (MAX_TEXT_CHARS) over the whole session,
HTTP_WS_IDLE_TIMEOUT_S between messages while no audio is pending, HTTP_WS_MAX_SESSION_S in
all, HTTP_AUTH_TOKEN on the handshake (app.BearerAuth). One admission slot per connection,
held from the first sentence's wait to the close (docs/decisions/032-websocket-text-stream.md):
a place is taken before the handshake is accepted (429 when the queue is full), the slot
within HTTP_QUEUE_TIMEOUT_S once accepted. A client that leaves sets the session's cancel
flag: the sentence in progress stops after its current chunk, its pending chunks are dropped
from the scheduler (the WorkTag's cancelled flag) and no other sentence starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from f5worker.errors import (
    InvalidInput,
    JobCancelled,
    RequestTimeout,
    TextTooLong,
    WorkerError,
)
from f5worker.job.prepared import JobControl, PreparedJob
from f5worker.job.schema import MAX_TEXT_CHARS, parse_request
from f5worker.job.sentences import SentenceSplitter
from f5worker.job.shaping import Shaper
from f5worker.job.stream_codecs import StreamEncoder, stream_encoder
from f5worker.serve.http import ws_protocol as wire
from f5worker.serve.http.admission import Slot
from f5worker.serve.http.requests import internal, payload
from f5worker.serve.http.service import Service
from f5worker.serve.http.speech import AudioStream, Progress
from f5worker.serve.http.statuses import error_response

if TYPE_CHECKING:
    from f5worker.job.batch import VoiceMemo

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client closed the connection (or stopped reading): nobody reads an error event."""


@dataclass
class Sentence:
    text: str
    utterance: int
    index: int
    ready_at: float  # when it became complete (perf_counter): its first audio is timed from it
    config: dict[str, Any]


@dataclass
class UtteranceEnd:
    utterance: int
    sentences: int


async def speech_stream(service: Service, websocket: WebSocket, request_id: str) -> None:
    """The route: refuse the handshake with the coded status, or run the session to its end."""
    try:
        service.require_worker()
        service.admission.admit()  # a place now: a full worker refuses before the handshake
    except WorkerError as err:
        payload(service, err, request_id)
        service.metrics.requests.labels(wire.ROUTE, str(err.http_status), err.code).inc()
        await websocket.send_denial_response(error_response(err, "openai", request_id))
        return
    try:
        await websocket.accept(headers=[(b"x-request-id", request_id.encode())])
    except BaseException:
        service.admission.withdraw()
        raise
    await Session(service, websocket, request_id).run()


class Session:
    def __init__(self, service: Service, websocket: WebSocket, request_id: str) -> None:
        self.service = service
        self.settings = service.settings
        self.ws = websocket
        self.request_id = request_id
        self.started = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        self.cancel = threading.Event()  # read by each sentence's JobControl (its WorkTag)
        self.gone = asyncio.Event()  # the client left: a wait for a slot ends at once
        self.queue: asyncio.Queue[Sentence | UtteranceEnd | None] = asyncio.Queue()
        self.pending = 0  # sentences and ends queued or in progress: the idle deadline waits
        self.splitter = SentenceSplitter()
        self.config: dict[str, Any] | None = None
        self.chars = 0
        self.utterance = 0
        self.index = 0  # the next sentence's index in its utterance
        self.open = False  # text received since the last input.done
        self.voices: VoiceMemo = {}  # each distinct voice fetched once per session
        self.slot: Slot | None = None
        self.asked_slot = False  # wait_for_slot gives the place back itself when cut short
        self.encoder: StreamEncoder | None = None  # the current utterance's, in the pool
        self.stream: AudioStream | None = None  # the sentence being made
        self.sentences = 0
        self.audio_s = 0.0
        self.code = "OK"

    async def run(self) -> None:
        reader = asyncio.create_task(self.read())
        speaker = asyncio.create_task(self.speak())
        err: WorkerError | None = None
        try:
            async with asyncio.timeout(self.settings.http_ws_max_session_s):
                await _first_failure({reader, speaker})
        except TimeoutError:
            err = RequestTimeout(f"a session lasts at most {self.settings.http_ws_max_session_s} s")
        except ClientGone:
            self.code = JobCancelled.code
        except WorkerError as exc:
            err = exc
        except Exception:
            log.exception("request %s: the speech stream failed", self.request_id)
            err = internal()
        finally:
            for task in (reader, speaker):
                task.cancel()
            await asyncio.gather(reader, speaker, return_exceptions=True)
            self.finish()
        if err is not None:
            await self.fail(err)
        elif self.code == "OK":
            await self.close(wire.NORMAL)
        self.log_end()

    # -- the reader ----------------------------------------------------------------------------

    async def read(self) -> None:
        while True:
            try:
                message = await self.receive()
            except ClientGone:
                if not self.left_cleanly():
                    raise
                self.put(None)
                return
            msg = wire.parse(message, self.settings.http_ws_max_message_bytes)
            if self.slot is not None:
                self.slot.touch()  # a client still talking is progress for /ping's rule
            if msg.kind == wire.CONFIG:
                if self.open:
                    raise InvalidInput("send input.done before a new session.config")
                self.config = msg.config
            elif self.config is None:
                raise InvalidInput("the first message must be session.config")
            elif msg.kind == wire.TEXT:
                self.take(msg.text)
            elif msg.kind == wire.DONE:
                self.end_utterance()
            else:  # session.close: the audio of what was flushed is still sent, then the close
                self.put(None)
                return

    async def receive(self) -> Mapping[str, Any]:
        """The next message, within the idle deadline while no audio is pending (a client
        waiting for a long utterance's audio sends nothing, and is not idle)."""
        idle = self.settings.http_ws_idle_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except TimeoutError:
                if self.pending:
                    continue
                raise RequestTimeout(f"no message for {idle} s") from None
            if message["type"] == "websocket.disconnect":
                raise ClientGone
            return message

    def left_cleanly(self) -> bool:
        """A client that closes with nothing pending (every utterance flushed and spoken) has
        ended its session, not abandoned it."""
        return not self.open and self.pending == 0

    def take(self, delta: str) -> None:
        self.chars += len(delta)
        if self.chars > MAX_TEXT_CHARS:
            raise TextTooLong(f"a session's text is at most {MAX_TEXT_CHARS} characters")
        if delta:
            self.open = True
        for text in self.splitter.feed(delta):
            self.add(text)

    def end_utterance(self) -> None:
        for text in self.splitter.flush():
            self.add(text)
        self.put(UtteranceEnd(self.utterance, self.index))
        self.utterance += 1
        self.index = 0
        self.open = False

    def add(self, text: str) -> None:
        assert self.config is not None
        self.put(Sentence(text, self.utterance, self.index, time.perf_counter(), self.config))
        self.index += 1

    def put(self, item: Sentence | UtteranceEnd | None) -> None:
        if item is not None:
            self.pending += 1
        self.queue.put_nowait(item)

    # -- the speaker ---------------------------------------------------------------------------

    async def speak(self) -> None:
        self.asked_slot = True
        self.slot = await self.service.admission.wait_for_slot(
            self.settings.http_queue_timeout_s, self.gone
        )
        self.service.counters.requests += 1
        while (item := await self.queue.get()) is not None:
            if isinstance(item, UtteranceEnd):
                await self.send_tail()
                await self.send_json(
                    {
                        "type": "session.done",
                        "utterance_index": item.utterance,
                        "total_sentences": item.sentences,
                    }
                )
            else:
                await self.sentence(item)
            self.pending -= 1

    async def sentence(self, item: Sentence) -> None:
        job = await self.loop.run_in_executor(self.service.pool, self.prepare, item)
        shape = Shaper(job.engine.sample_rate, job.req.sample_rate, job.req.remove_silence, True)
        await self.send_json(
            {
                "type": "audio.start",
                "utterance_index": item.utterance,
                "sentence_index": item.index,
                "sentence_text": item.text,
                "format": job.req.format,
                "sample_rate": shape.out_rate,
            }
        )
        progress = Progress(sample_rate=job.engine.sample_rate)
        slot = self.slot
        assert slot is not None

        def progressed(done: int, total: int) -> None:
            progress(done, total)
            slot.touch()

        control = JobControl(cancelled=self.cancel.is_set, progress=progressed, live=True)
        chunks = self.encoded(job, shape, control, progress)
        self.stream = AudioStream(chunks, self.service.pool, self.cancel, self.released)
        first_s: float | None = None
        size = 0
        while (data := await self.stream.next()) is not None:
            if first_s is None:
                first_s = time.perf_counter() - item.ready_at
            await self.send_bytes(data)
            size += len(data)
        self.stream = None
        self.sentences += 1
        self.audio_s += progress.audio_s
        engine_s = job.clock.stages.get("synthesis", 0.0)
        self.service.counters.chunks += progress.chunks_done
        self.service.metrics.audio_made(
            wire.ROUTE, job.model.name, job.voice_kind, progress.audio_s, engine_s
        )
        if first_s is not None:
            self.service.metrics.first_audio.labels(wire.ROUTE).observe(first_s)
        await self.send_json(
            {
                "type": "audio.done",
                "utterance_index": item.utterance,
                "sentence_index": item.index,
                "total_bytes": size,
                "audio_s": round(progress.audio_s, 4),
                "chunks": progress.chunks_done,
                "first_audio_s": round(first_s or 0.0, 4),
                "total_s": round(time.perf_counter() - item.ready_at, 4),
                "seed": job.params.seed,
                "error": False,
            }
        )

    def prepare(self, item: Sentence) -> PreparedJob:
        """The sentence as a speech request of its own (in a pool thread): every input error
        is coded here, before its audio.start."""
        if self.cancel.is_set():
            raise JobCancelled("the client left")
        req = parse_request(wire.job_input(item.config, item.text))
        worker = self.service.require_worker()
        first = self.service.first_chunk_bytes
        return worker.prepare_request(
            req, self.request_id, voices=self.voices, first_chunk_bytes=first
        )

    def encoded(
        self, job: PreparedJob, shape: Shaper, control: JobControl, progress: Progress
    ) -> Generator[bytes, None, None]:
        """One sentence's audio, encoded into the utterance's stream (runs in a pool thread)."""
        if self.encoder is None:
            self.encoder = stream_encoder(job.req.format, shape.out_rate)
        worker = self.service.require_worker()
        for piece in worker.pieces(job, control):
            progress.samples += piece.audio.samples.size
            data = self.encoder.encode(shape(piece.audio, last=piece.last).audio)
            if data:
                yield data

    async def send_tail(self) -> None:
        """The end of the utterance's audio stream (a container's or codec's last bytes)."""
        encoder, self.encoder = self.encoder, None
        if encoder is None:
            return
        # finished and closed in one pool call: a cancel here leaves both to that thread
        tail = await self.loop.run_in_executor(self.service.pool, _finish, encoder)
        if tail:
            await self.send_bytes(tail)

    # -- sending and closing -------------------------------------------------------------------

    async def send_json(self, event: dict[str, Any]) -> None:
        await self.bounded({"type": "websocket.send", "text": _json(event)})

    async def send_bytes(self, data: bytes) -> None:
        await self.bounded({"type": "websocket.send", "bytes": data})

    async def bounded(self, message: dict[str, Any]) -> None:
        """A send that must finish within HTTP_WRITE_TIMEOUT_S: a client that stops reading
        loses its session (the send waits while the socket's buffer is full)."""
        timeout_s = self.settings.http_write_timeout_s
        try:
            await asyncio.wait_for(self.ws.send(message), timeout_s)
        except TimeoutError:
            log.info("request %s: no write progress for %s s: cut", self.request_id, timeout_s)
            raise ClientGone from None
        except (WebSocketDisconnect, OSError, RuntimeError):
            raise ClientGone from None
        if self.slot is not None:
            self.slot.touch()

    async def fail(self, err: WorkerError) -> None:
        payload(self.service, err, self.request_id)  # the code in the log; fatal errors' hook
        self.code = err.code
        with contextlib.suppress(ClientGone):
            await self.send_json(wire.error_event(err))
        await self.close(wire.close_code(err))

    async def close(self, code: int) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):  # already closed by the client: nothing to say
            await asyncio.wait_for(self.ws.close(code), self.settings.http_write_timeout_s)

    def finish(self) -> None:
        """However the session ended: no more model work; the slot goes back once the pool
        thread is done with the sentence in progress (AudioStream.close)."""
        self.cancel.set()
        self.gone.set()
        if self.code == JobCancelled.code:
            self.service.counters.cancelled += 1
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()  # calls released() when the thread is done
        else:
            self.released_now()

    def released(self) -> None:  # from the pool thread, once it is done with the stream
        self.loop.call_soon_threadsafe(self.released_now)

    def released_now(self) -> None:
        encoder, self.encoder = self.encoder, None
        if encoder is not None:
            encoder.close()
        admission = self.service.admission
        if self.slot is not None:
            admission.release(self.slot)
            self.slot = None
        elif not self.asked_slot:
            admission.withdraw()  # admitted before the handshake, ended before its wait began

    def log_end(self) -> None:
        code = self.code
        self.service.metrics.requests.labels(wire.ROUTE, "101", code).inc()
        self.service.metrics.latency.labels(wire.ROUTE).observe(time.perf_counter() - self.started)
        log.info(
            "request %s: speech stream %s: chars=%d sentences=%d audio_s=%.2f total_s=%.3f",
            self.request_id,
            code,
            self.chars,
            self.sentences,
            self.audio_s,
            time.perf_counter() - self.started,
        )


async def _first_failure(tasks: set[asyncio.Task[None]]) -> None:
    """Wait until both tasks end; the first exception either raises is raised here."""
    waiting = set(tasks)
    while waiting:
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc


def _finish(encoder: StreamEncoder) -> bytes:
    try:
        return encoder.finish()
    finally:
        encoder.close()


def _json(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
