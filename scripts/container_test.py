"""`make container-test`: build the real Dockerfile, start the image's CMD, answer one job.

No Docker engine runs on these machines and no registry is reachable, so:
1. Debian's buildah and debootstrap are installed when missing (CI runs as root).
2. A stand-in for the RunPod torch image is built (container/standin-base.sh): bookworm's
   Python 3.11 plus the PyPI torch 2.4.x from the local uv cache, committed under a local name.
3. scripts/build.sh builds our Dockerfile on it (BASE_IMAGE, BAKE_MODEL=demo, and for
   FLASH_ATTN_BAKE a stand-in flash-attn wheel mounted into the build with its sha256, since
   GitHub is unreachable),
   stamping the git version.
4. The OCI labels and WORKER_VERSION are checked against git, the flash-attn labels against the
   stand-in wheel (build.sh adds them from the bake step's record), and the image runs as the
   non-root worker (uid 1000) that can write its caches and home, not the code in /app.
5. The image's CMD runs with the local-API flags, the demo model on the CPU and a moto S3 server
   on 127.0.0.1 as the model cache; test_input.json is POSTed to /runsync and must come back as
   a WAV stamped with the version, and the model must land in S3; the start-up log must name the
   baked wheel's sha256.
6. The ASR companion imports and transcribes on the CPU inside the image (a random-weight
   Whisper built here, mounted read-only), without torch or onnxruntime.
7. The same image starts again with SERVE_MODE=http (a load-balancing endpoint; the model now
   an S3 cache hit): /ping must answer 204 while it starts and 200 once warm, and an OpenAI
   speech request must stream back an mp3 that decodes.
Everything lives in a private buildah storage under one temp dir, removed at the end even on
failure. Prints a table of step times and the peak disk use.

usage: .venv/bin/python scripts/container_test.py [--keep] [--torch 2.4.1]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from container.fake_flash_attn import F5_TTS_IMPORTS, GOOD_KERNEL, make_wheel  # noqa: E402
from f5worker.testing.s3_servers import SECRET_KEY, client_for, moto_server, s3_env  # noqa: E402
from f5worker.testing.worker import ping  # noqa: E402

BASE_IMAGE = "localhost/standin-runpod-pytorch:2.4-py3.11"
IMAGE = "localhost/f5-tts-worker"
APT_PACKAGES = ("buildah", "debootstrap")
CA_BUNDLE = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
BUCKET = "container-test"
FLASH_ATTN_WHEEL = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
WORKER_USER = "1000:1000"
READY_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 300.0
UPLOAD_TIMEOUT_S = 120.0
# Measured peak of the work dir: 21 GB, while the 5 GB stand-in base is committed (the container,
# the layer blob and the new layer exist at once). Check up front rather than fail mid-build.
REQUIRED_FREE_GB = 25.0


class Steps:
    """Times each step and the disk it takes, for the closing table.

    Disk is `du` of the work dir (buildah storage, temp files): after each step, and its peak,
    sampled every few seconds in the background (commits briefly hold a layer twice).
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: list[tuple[str, float, float]] = []
        self.started = time.monotonic()
        self.peak_gb = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(3.0):
            self.peak_gb = max(self.peak_gb, disk_gb(self.work))

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        mark = time.monotonic()
        failed = True
        try:
            yield
            failed = False
        finally:
            label = f"{name} (failed)" if failed else name
            self.rows.append((label, time.monotonic() - mark, disk_gb(self.work)))

    def table(self) -> str:
        self._stop.set()
        lines = ["| step | seconds | work dir GB after |", "|---|---|---|"]
        lines += [f"| {n} | {s:.0f} | {d:.1f} |" for n, s, d in self.rows]
        total = time.monotonic() - self.started
        peak = max([self.peak_gb, *(d for _, _, d in self.rows)])
        lines.append(f"| total | {total:.0f} | peak {peak:.1f} |")
        return "\n".join(lines)


def disk_gb(path: Path) -> float:
    done = subprocess.run(
        ["nice", "du", "-sxb", str(path)], capture_output=True, text=True, check=False
    )
    return int(done.stdout.split()[0]) / 1e9 if done.returncode == 0 else 0.0


def run(cmd: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, check=True, text=True, **kwargs)


def ensure_tools() -> None:
    missing = [p for p in APT_PACKAGES if shutil.which(p) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"container-test needs {', '.join(missing)}: apt-get install them as root")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=apt_env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=apt_env, check=True)


def overlay_works(work: Path) -> bool:
    """overlayfs keeps the 5 GB base once; vfs copies it per container (about 3x the disk)."""
    probe = work / "overlay-probe"
    dirs = [probe / d for d in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True)
    opts = f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}"
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs[3])], capture_output=True
    )
    if done.returncode == 0:
        subprocess.run(["umount", str(dirs[3])], check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return done.returncode == 0


def storage_env(work: Path) -> dict[str, str]:
    """A private buildah storage under `work`, so cleanup is one rm and nothing else is touched."""
    driver = "overlay" if overlay_works(work) else "vfs"
    conf = work / "storage.conf"
    conf.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{work / "storage"}"\n'
        f'runroot = "{work / "run"}"\n'
    )
    print(f"buildah storage: {driver} under {work}", flush=True)
    return {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(conf),
        "BUILDAH_ISOLATION": "chroot",
        "TMPDIR": str(work / "tmp"),
    }


def torch_pin() -> str:
    """The dev lock's torch (2.4.x): its wheels are in the uv cache already."""
    match = re.search(r"^torch==(\S+)", (REPO / "requirements-dev.txt").read_text(), re.M)
    if match is None:
        raise SystemExit("requirements-dev.txt pins no torch")
    return match.group(1)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def stand_in_wheel(work: Path) -> tuple[Path, str]:
    """A stand-in flash-attn wheel and its sha256, mounted into the build (no network needed).

    The bake step installs only a wheel with a known sha256, and a custom URL only over https;
    a local file with FLASH_ATTN_BAKE_SHA256 goes through the same checks.
    """
    root = work / "wheels"
    root.mkdir()
    wheel = make_wheel(root / FLASH_ATTN_WHEEL, GOOD_KERNEL, extra=F5_TTS_IMPORTS)
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def build(env: dict[str, str], uv_cache: str, wheel: Path, wheel_sha256: str) -> str:
    """scripts/build.sh on the stand-in; returns the tag it printed.

    FLASH_ATTN_BAKE gets a stand-in wheel mounted at /flash-attn-wheels (GitHub is unreachable
    here), so the Dockerfile's bake step checks its sha256, installs and verifies it for real;
    f5-tts must still work with it.
    """
    volumes = [
        f"{CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
        "/etc/resolv.conf:/etc/resolv.conf:ro",
        f"{uv_cache}:/uv-cache",
        f"{wheel.parent}:/flash-attn-wheels:ro",
    ]
    extra = ["--pull=never", "--layers=false", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    extra += ["--build-arg", f"FLASH_ATTN_BAKE=/flash-attn-wheels/{wheel.name}"]
    extra += ["--build-arg", f"FLASH_ATTN_BAKE_SHA256={wheel_sha256}"]
    extra += ["--build-arg", "BAKE_MODEL=demo"]
    for volume in volumes:
        extra += ["--volume", volume]
    cmd = ["scripts/build.sh", "--allow-dirty", "--image", IMAGE, "--", *extra]
    done = run(cmd, env, cwd=REPO, stdout=subprocess.PIPE)
    sys.stdout.write(done.stdout[-4000:])
    return done.stdout.strip().splitlines()[-1]


def check_stamp(env: dict[str, str], tag: str, wheel: Path, wheel_sha256: str) -> dict[str, Any]:
    """Labels, env and tag agree with each other and with git, the flash-attn labels with the
    baked stand-in wheel, USER is the worker; returns the image config.

    Checked against the stamped revision rather than HEAD, which may move during a build.
    """
    raw = run(["buildah", "inspect", "--type", "image", tag], env, stdout=subprocess.PIPE).stdout
    config = json.loads(raw)["Docker"]["config"]
    labels = config.get("Labels") or {}
    image_env = dict(e.split("=", 1) for e in config.get("Env") or [])
    version = labels.get("org.opencontainers.image.version", "")
    revision = labels.get("org.opencontainers.image.revision", "")
    described = git("describe", "--tags", "--always", revision) if revision else ""
    problems = []
    if not described or version.removesuffix("-dirty") != described:
        problems.append(f"label version={version!r} is not git describe of {revision!r}")
    if git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}") != revision:
        problems.append(f"label revision={revision!r} is not a full commit sha of this repo")
    created = labels.get("org.opencontainers.image.created", "")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created):
        problems.append(f"label created={created!r} is not an RFC 3339 UTC time")
    if not labels.get("org.opencontainers.image.source"):
        problems.append("label source is empty")
    if image_env.get("WORKER_VERSION") != version:
        problems.append(f"env WORKER_VERSION={image_env.get('WORKER_VERSION')!r}, want {version!r}")
    if image_env.get("WORKER_GIT_SHA") != revision:
        problems.append(
            f"env WORKER_GIT_SHA={image_env.get('WORKER_GIT_SHA')!r}, want {revision!r}"
        )
    if tag != f"{IMAGE}:{version}":
        problems.append(f"tag {tag!r}, want {IMAGE}:{version}")
    if config.get("Cmd") != ["python", "-u", "model_cache_init.py"]:
        problems.append(f"CMD is {config.get('Cmd')}")
    if config.get("User") != WORKER_USER:
        problems.append(f"USER is {config.get('User')!r}, want {WORKER_USER}")
    want = {
        "wheel": wheel.name,
        "sha256": wheel_sha256,
        "url": f"/flash-attn-wheels/{wheel.name}",
        "trust": "pinned",
    }
    for key, value in want.items():
        got = labels.get(f"org.f5worker.flash-attn.{key}")
        if got != value:
            problems.append(f"label org.f5worker.flash-attn.{key}={got!r}, want {value!r}")
    if problems:
        raise SystemExit("image stamp is wrong:\n  " + "\n  ".join(problems))
    print(f"stamp ok: {version}, flash-attn sha256 {wheel_sha256[:12]}…", flush=True)
    return config


def check_user(env: dict[str, str], tag: str) -> None:
    """The image's default user is uid 1000, which can write its caches and home but not /app."""
    ctr = run(["buildah", "from", "--pull-never", tag], env, stdout=subprocess.PIPE).stdout.strip()
    probe = (
        'id -u; test -w "$MODEL_CACHE_DIR" && test -w "$HF_HOME" && test -w "$HOME" '
        "&& test ! -w /app && echo caches-writable"
    )
    try:
        out = run(["buildah", "run", ctr, "--", "sh", "-c", probe], env, stdout=subprocess.PIPE)
    finally:
        subprocess.run(["buildah", "rm", ctr], env=env, check=False, capture_output=True)
    if out.stdout.split() != ["1000", "caches-writable"]:
        raise SystemExit(f"the image does not run as the worker with its caches: {out.stdout!r}")
    print("user ok: uid 1000 owns its caches and home, /app read-only", flush=True)


# Run inside the image: the ASR companion transcribes on the CPU with the image's packages alone
# (CTranslate2, no torch import, no onnxruntime installed: overrides.txt drops it).
ASR_PROBE = """
import importlib.util, json, sys
import numpy as np
from pathlib import Path
from f5worker.asr.engine import WhisperTranscriber
asr = WhisperTranscriber(lambda: Path("/asr-model"), "cpu")
got = asr.transcribe(np.zeros(24000, np.float32), 24000, words=True)
print(json.dumps({"language": got.language, "words": len(got.words), "seconds": got.seconds,
    "torch": "torch" in sys.modules, "onnxruntime": importlib.util.find_spec("onnxruntime")
    is not None}))
"""


def check_asr(env: dict[str, str], tag: str, work: Path) -> None:
    """The ASR companion imports and transcribes inside the image, on the CPU, with a
    random-weight Whisper built here (f5worker/testing is not in the image) mounted read-only."""
    from f5worker.testing.tiny_whisper import build_tiny_whisper

    model = build_tiny_whisper(work / "asr-model")
    model.chmod(0o755)
    for path in model.iterdir():
        path.chmod(0o644)
    ctr = run(["buildah", "from", "--pull-never", tag], env, stdout=subprocess.PIPE).stdout.strip()
    try:
        mount = ["--volume", f"{model}:/asr-model:ro"]
        out = run(
            ["buildah", "run", *mount, ctr, "--", "python", "-c", ASR_PROBE],
            env,
            stdout=subprocess.PIPE,
        )
    finally:
        subprocess.run(["buildah", "rm", ctr], env=env, check=False, capture_output=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["words"] or got["torch"] or got["onnxruntime"]:
        raise SystemExit(f"the ASR companion does not work in the image as it should: {got}")
    print(f"asr ok: {got['words']} words in {got['seconds']:.2f} s on the CPU", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_image(
    env: dict[str, str],
    tag: str,
    config: dict[str, Any],
    worker_env: dict[str, str],
    log: Path,
    http: bool = False,
) -> Iterator[str]:
    """`buildah run` the image's own CMD plus the SDK's local-API flags (or, with http, with
    SERVE_MODE=http on a free port); yields the server's URL once it answers."""
    ctr = run(["buildah", "from", "--pull-never", tag], env, stdout=subprocess.PIPE).stdout.strip()
    port = free_port()
    if http:
        worker_env = {**worker_env, "SERVE_MODE": "http", "PORT": str(port)}
        worker_env["HTTP_HOST"] = "127.0.0.1"
    cmd = ["buildah", "run"]
    for key, value in worker_env.items():
        cmd += ["--env", f"{key}={value}"]
    api = (
        [] if http else ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    )
    cmd += [ctr, "--", *config["Cmd"], *api]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        if http:
            wait_healthy(proc, url, log)
        else:
            wait_ready(proc, url, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(["buildah", "rm", ctr], env=env, check=False, capture_output=True)


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the image's CMD exited with {proc.returncode}:\n{tail(log)}")
        try:
            urllib.request.urlopen(f"{url}/docs", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise SystemExit(f"worker not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    """/ping as RunPod's load balancer polls it: 204 while starting, then 200, nothing else."""
    seen: list[int] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the image's CMD exited with {proc.returncode}:\n{tail(log)}")
        status = ping(url)
        if status is not None and status not in seen:
            seen.append(status)
        if status == 200:
            if seen != [204, 200]:
                raise SystemExit(f"/ping answered {seen}, want [204, 200]:\n{tail(log)}")
            print("ping ok: 204 while starting, then 200", flush=True)
            return
        time.sleep(0.2)
    raise SystemExit(f"/ping not 200 after {READY_TIMEOUT_S:.0f} s ({seen}):\n{tail(log)}")


def answer_speech(url: str) -> None:
    """An OpenAI speech request, streamed back as mp3, decoded here with PyAV."""
    import io

    import av

    body = {"model": "tts-1", "input": "Hello from the load balancer.", "voice": "alloy"}
    request = urllib.request.Request(
        f"{url}/v1/audio/speech",
        data=json.dumps({**body, "response_format": "mp3"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=JOB_TIMEOUT_S) as response:
        mime, data = response.headers.get("Content-Type"), response.read()
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    if mime != "audio/mpeg" or samples == 0:
        raise SystemExit(f"unexpected speech: {mime}, {len(data)} bytes, {samples} samples")
    print(f"speech ok: {len(data)} bytes of mp3, {samples} samples", flush=True)


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def answer_job(url: str, version: str) -> None:
    payload = (REPO / "test_input.json").read_bytes()
    request = urllib.request.Request(
        f"{url}/runsync", data=payload, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=JOB_TIMEOUT_S) as response:
        reply = json.loads(response.read())
    if reply.get("status") != "COMPLETED":
        raise SystemExit(f"job did not complete: {str(reply)[:500]}")
    output = reply["output"]
    result = output[0] if isinstance(output, list) else output  # aggregated stream: a list
    wav = base64.b64decode(result["audio_base64"])
    if wav[:4] != b"RIFF" or result.get("worker_version") != version:
        raise SystemExit(f"unexpected result: {wav[:4]!r}, {result.get('worker_version')!r}")
    print(f"job ok: {len(wav)} bytes of WAV, {result['duration_s']} s, {version}", flush=True)


def wait_for_upload(endpoint: str) -> int:
    """The worker's background upload of the model into the S3 cache; returns the key count."""
    client = client_for(endpoint)
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        keys = client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        if keys and any(
            o["Key"].endswith("manifest.json")
            for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        ):
            return keys
        time.sleep(1)
    raise SystemExit(f"no model manifest in s3://{BUCKET} after {UPLOAD_TIMEOUT_S:.0f} s")


def check_log(log: Path, wheel_sha256: str) -> None:
    text = log.read_text(errors="replace")
    wanted = (
        "diag.worker_version=",
        "diag.pkg.flash-attn=2.7.4.post1",  # baked by the build
        f"diag.flash_attn.wheel_sha256={wheel_sha256}",
        "diag.flash_attn.wheel_source=baked (pinned)",
        "flash-attn: skipped (DEVICE=cpu)",
        "step flash_attn took",
        "ready: total=",
    )
    problems = [f"log lacks {w!r}" for w in wanted if w not in text]
    if SECRET_KEY in text:
        problems.append("the S3 secret key appears in the log")
    if problems:
        raise SystemExit("; ".join(problems) + "\n" + tail(log))
    ready = next(line for line in text.splitlines() if "ready: total=" in line)
    print(f"log ok: {ready.split('ready: ', 1)[1]}", flush=True)


def cleanup(work: Path, env: dict[str, str]) -> None:
    """Remove every container and image of the private storage, then the storage itself."""
    for cmd in (["buildah", "rm", "--all"], ["buildah", "rmi", "--all", "--force"]):
        subprocess.run(cmd, env=env, capture_output=True, check=False)
    subprocess.run(["buildah", "umount", "--all"], env=env, capture_output=True, check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(work))), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work dir and images")
    parser.add_argument("--torch", default=None, help="stand-in torch version (default: dev lock)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    ensure_tools()
    free_gb = shutil.disk_usage("/var/tmp").free / 1e9
    if free_gb < REQUIRED_FREE_GB:
        raise SystemExit(
            f"container-test needs {REQUIRED_FREE_GB:.0f} GB free in /var/tmp, has {free_gb:.1f}"
        )
    work = Path(tempfile.mkdtemp(prefix="f5-container-test-", dir="/var/tmp"))
    (work / "tmp").mkdir()
    env = storage_env(work)
    steps = Steps(work)
    uv = str(REPO / ".venv/bin/uv")
    uv_cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True).stdout.strip()
    try:
        with steps.step("stand-in base (debootstrap + torch from the uv cache)"):
            base_env = {**env, "UV": uv, "PYTHON": str(REPO / ".venv/bin/python")}
            run(
                ["container/standin-base.sh", BASE_IMAGE, args.torch or torch_pin()],
                base_env,
                cwd=REPO,
            )
        with steps.step("build the Dockerfile (scripts/build.sh)"):
            wheel, wheel_sha256 = stand_in_wheel(work)
            tag = build(env, uv_cache, wheel, wheel_sha256)
            config = check_stamp(env, tag, wheel, wheel_sha256)
            check_user(env, tag)
        with steps.step("the ASR companion transcribes inside the image (CPU)"):
            check_asr(env, tag, work)
        version = tag.rsplit(":", 1)[1]
        with moto_server() as s3:
            client_for(s3).create_bucket(Bucket=BUCKET)
            worker_env = {"MODEL_NAME": "demo", "DEVICE": "cpu", **s3_env(s3, BUCKET)}
            with steps.step("start the CMD, answer a job, model lands in S3"):
                log = work / "worker.log"
                with running_image(env, tag, config, worker_env, log) as url:
                    answer_job(url, version)
                    print(f"s3 ok: {wait_for_upload(s3)} objects", flush=True)
                check_log(log, wheel_sha256)
            with steps.step("start it as an http endpoint (S3 hit): /ping, one speech"):
                log = work / "worker-http.log"
                with running_image(env, tag, config, worker_env, log, http=True) as url:
                    answer_speech(url)
    finally:
        if args.keep:
            print(f"kept {work} (CONTAINERS_STORAGE_CONF={work / 'storage.conf'})")
        else:
            with steps.step("cleanup"):
                cleanup(work, env)
        print(steps.table())
    print("container-test passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
