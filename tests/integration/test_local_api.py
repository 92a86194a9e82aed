"""End to end: `make run` on a free port, POST /runsync through RunPod's real local API."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from f5worker.testing.worker import running_worker, runsync

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worker")
    env = {"MODEL_CACHE_DIR": str(tmp / "models"), "WORKER_VERSION": "it-1"}
    with running_worker(env, tmp / "worker.log") as url:
        yield url, tmp / "worker.log"


def decode_wav(reply):
    """/runsync's output is the list of the handler's items: one for a job that does not stream."""
    assert reply["status"] == "COMPLETED", reply
    [item] = reply["output"]
    samples, rate = sf.read(io.BytesIO(base64.b64decode(item["audio_base64"])))
    return samples, rate


def test_runsync_returns_a_wav_that_grows_with_text(worker_url):
    url, _ = worker_url
    short, rate = decode_wav(runsync(url, {"text": "Hello.", "seed": 1, "nfe_step": 4}))
    long, _ = decode_wav(
        runsync(
            url,
            {
                "text": "Hello. " + "This sentence is a good deal longer. " * 3,
                "seed": 1,
                "nfe_step": 4,
            },
        )
    )
    assert rate == 24000 and np.isfinite(short).all() and np.isfinite(long).all()
    assert len(long) > 2 * len(short)


def test_same_seed_gives_identical_audio(worker_url):
    url, _ = worker_url
    a = runsync(url, {"text": "Repeat after me.", "seed": 11, "nfe_step": 4})
    b = runsync(url, {"text": "Repeat after me.", "seed": 11, "nfe_step": 4})
    assert a["output"][0]["audio_base64"] == b["output"][0]["audio_base64"]
    assert a["output"][0]["worker_version"] == "it-1"


def test_bad_request_then_good_request(worker_url):
    url, log = worker_url
    bad = runsync(url, {"seed": 1})
    # The local API does not look inside a streaming handler's items (handler.py's docstring):
    # the job is COMPLETED and its one item is the coded error. On RunPod it is FAILED.
    assert bad["status"] == "COMPLETED"
    [error] = bad["output"]
    assert error["error_code"] == "INVALID_INPUT" and error["error"].startswith("INVALID_INPUT: ")
    samples, _ = decode_wav(runsync(url, {"text": "Still here.", "nfe_step": 4}))
    assert len(samples) > 0
    text = log.read_text()
    assert "demo model" in text and "Still here" not in text  # no user text in the log
