"""Progress reports: ordered, newest first, flushed before the result, never failing a job."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from f5worker.config import Settings
from f5worker.job.prepared import JobControl
from f5worker.serve.progress import FLUSH_TIMEOUT_S, POST_TIMEOUT_S, ProgressSender
from f5worker.serve.queue import QueueHandler


class SlowPost:
    """Records posts; each takes `delay` seconds, like a round trip to RunPod."""

    def __init__(self, delay: float = 0.0, fail: bool = False, events: list | None = None) -> None:
        self.delay, self.fail = delay, fail
        self.sent: list[str] = [] if events is None else events
        self.first = threading.Event()
        self.loops: set[int] = set()
        self.closed = False

    async def __call__(self, text: str) -> None:
        self.first.set()
        self.loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("RunPod unreachable")
        self.sent.append(text)

    async def aclose(self) -> None:
        self.closed = True


def test_reports_go_in_order_and_a_busy_post_keeps_only_the_newest():
    post = SlowPost(delay=0.2)
    sender = ProgressSender(post)
    sender(1, 5)
    assert post.first.wait(5)
    for done in (2, 3, 4):  # all while the first post is under way
        sender(done, 5)
    sender.close()
    assert post.sent == ["1/5 chunks", "4/5 chunks"]


def test_close_waits_for_the_last_report():
    post = SlowPost(delay=0.3)
    sender = ProgressSender(post)
    sender(1, 1)
    sender.close(timeout=5)
    assert post.sent == ["1/1 chunks"]
    sender(2, 2)  # after close: ignored
    assert post.sent == ["1/1 chunks"]


def test_close_without_flush_drops_what_is_pending():
    post = SlowPost(delay=0.2)
    sender = ProgressSender(post)
    sender(1, 3)
    assert post.first.wait(5)
    sender(2, 3)
    sender.close(flush=False)
    time.sleep(0.4)
    assert post.sent == ["1/3 chunks"]


def test_a_failing_post_is_logged_and_the_job_goes_on(caplog):
    sender = ProgressSender(SlowPost(fail=True))
    sender(1, 2)
    sender(2, 2)
    sender.close(timeout=5)
    assert "progress report not sent: ConnectionError" in caplog.text


def test_a_slow_post_cannot_land_after_close():
    """RunPod would show a progress report that arrives after the result instead of it."""
    post = SlowPost(delay=7.0)
    sender = ProgressSender(post, post_timeout=0.3)
    sender(1, 2)
    assert post.first.wait(5)
    sender(2, 2)  # pending behind the slow post: its turn comes after the flush deadline
    started = time.monotonic()
    sender.close(timeout=0.5)
    assert time.monotonic() - started < 1.0
    time.sleep(0.3)
    assert post.sent == [] and post.closed


def test_post_timeout_is_shorter_than_the_flush_wait():
    assert POST_TIMEOUT_S < FLUSH_TIMEOUT_S


def test_one_event_loop_serves_every_post_of_a_job():
    post = SlowPost(delay=0.05)
    sender = ProgressSender(post)
    for done in (1, 2, 3):
        sender(done, 3)
        time.sleep(0.1)
    sender.close()
    assert post.sent == ["1/3 chunks", "2/3 chunks", "3/3 chunks"]
    assert len(post.loops) == 1 and post.closed


def test_no_thread_without_a_report():
    sender = ProgressSender(SlowPost())
    before = threading.active_count()
    sender.close()
    assert threading.active_count() == before


class FakeWorker:
    """Worker.run's contract: items, reporting progress through the control it is given."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.settings = Settings(max_concurrency=1)

    def run(self, job: dict, control: JobControl | None = None):
        control = control or JobControl()
        for i, item in enumerate(self.items):
            control.progress(i + 1, len(self.items))
            time.sleep(0.01)
            yield item


def collect(handler: QueueHandler, events: list[str]) -> list[dict]:
    async def run() -> list[dict]:
        out = []
        async for item in handler.handle({"id": "j"}):
            events.append(f"item {item}")
            out.append(item)
        events.append("result")
        return out

    return asyncio.run(run())


def test_the_handler_flushes_progress_before_the_result():
    events: list[str] = []
    post = SlowPost(0.05, events=events)
    handler = QueueHandler(FakeWorker([{"n": 1}, {"n": 2}]), progress_post=lambda _job: post)
    assert collect(handler, events) == [{"n": 1}, {"n": 2}]
    assert events.index("2/2 chunks") < events.index("result")


def test_an_error_item_is_yielded_after_the_flush():
    """The SDK sends a failed job's result as soon as it sees the error item."""
    events: list[str] = []
    post = SlowPost(0.05, events=events)
    worker = FakeWorker([{"n": 1}, {"error": "CANCELLED: stop"}])
    collect(QueueHandler(worker, progress_post=lambda _job: post), events)
    assert events.index("2/2 chunks") < events.index("item {'error': 'CANCELLED: stop'}")


def test_without_a_job_done_url_nothing_is_posted():
    events: list[str] = []
    handler = QueueHandler(FakeWorker([{"n": 1}]), progress_post=lambda _job: None)
    assert collect(handler, events) == [{"n": 1}]
    assert events == ["item {'n': 1}", "result"]


def test_runpod_posts_share_one_session_and_reach_the_job_done_url(monkeypatch):
    import http.server

    from runpod.serverless.modules import rp_http

    from f5worker.serve.queue import runpod_progress_post

    bodies: list[str] = []
    clients: set[tuple] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            clients.add(self.client_address)  # one keep-alive connection: one session
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/done/$ID?x=1"
    monkeypatch.setattr(rp_http, "JOB_DONE_URL", url)
    try:
        post = runpod_progress_post({"id": "job-1"})
        assert post is not None
        sender = ProgressSender(post)
        sender(1, 2)
        time.sleep(0.3)
        sender(2, 2)
        sender.close()
    finally:
        server.shutdown()
    assert [json.loads(b)["output"] for b in bodies] == ["1/2 chunks", "2/2 chunks"]
    assert len(clients) == 1
