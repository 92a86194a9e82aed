"""A fake of RunPod's management and serverless APIs on 127.0.0.1, for scripts/deploy.py and
scripts/smoke.py.

It answers the calls those scripts make with RunPod's documented request and response shapes:

- `POST /graphql` (what the runpod SDK posts to `$RUNPOD_API_BASE_URL/graphql`): the
  `saveTemplate`, `saveEndpoint` (with `type`, or with an `id` to change an endpoint) and
  `updateEndpointTemplate` mutations, and `myself { endpoints { ... } }`; a GraphQL error is a
  200 with `{"errors": [{"message": ...}]}`, a wrong key a 401, as RunPod answers;
- REST (`$RUNPOD_REST_BASE_URL` = `<fake>/v1`): `GET /v1/templates` (endpoint-bound templates
  only with `includeEndpointBoundTemplates=true`), `PATCH /v1/templates/{id}`,
  `GET /v1/endpoints`, `PATCH /v1/endpoints/{id}` (EndpointUpdateInput's fields);
- the queue job API (`runpod.endpoint_url_base` = `<fake>/v2`): `POST /v2/{id}/runsync`,
  `GET /v2/{id}/status/{job}`, answering `job_output` (a callable of the job input);
- a load-balancing worker under `<fake>/lb/{id}` (RunPod's `https://{id}.api.runpod.ai`):
  `GET /ping` (`ping_statuses` in turn, then 200) and `POST /v1/audio/speech`, answering
  `speech_body` (a callable of the request) as a streamed WAV.

Every request is recorded in `calls` (method, path, parsed body); the templates and endpoints
live in `templates` and `endpoints`, so a test can read RunPod's state as a deploy left it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from f5worker.job.stream_codecs import wav_header
from f5worker.testing.audio import noise, wav_b64

# --------------------------------------------------------------------- GraphQL input literals

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)'
    r"|(?P<punct>[{}\[\]():,]))"
)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"GraphQL syntax error near {text[pos : pos + 20]!r}")
        out.append(m.group(m.lastgroup or "punct"))
        pos = m.end()
    return out


def _value(toks: list[str], i: int) -> tuple[Any, int]:
    tok = toks[i]
    if tok == "{":
        obj: dict[str, Any] = {}
        i += 1
        while toks[i] != "}":
            if toks[i] == ",":
                i += 1
                continue
            key = toks[i]
            if toks[i + 1] != ":":
                raise ValueError(f"expected ':' after {key}")
            obj[key], i = _value(toks, i + 2)
        return obj, i + 1
    if tok == "[":
        items: list[Any] = []
        i += 1
        while toks[i] != "]":
            if toks[i] == ",":
                i += 1
                continue
            item, i = _value(toks, i)
            items.append(item)
        return items, i + 1
    if tok.startswith('"'):
        return json.loads(tok), i + 1
    if re.match(r"-?\d", tok):
        return (float(tok) if "." in tok else int(tok)), i + 1
    if tok in ("true", "false"):
        return tok == "true", i + 1
    if tok == "null":
        return None, i + 1
    return tok, i + 1  # an enum value such as FLASHBOOT


def mutation_input(query: str, name: str) -> dict[str, Any]:
    """The `input: {...}` argument of mutation `name` in `query`, as a dict."""
    toks = _tokens(query)
    i = toks.index(name)
    while toks[i] != "input":
        i += 1
    value, _ = _value(toks, i + 2)
    return dict(value)


# ------------------------------------------------------------------------------ the fake


def good_job_output(job_input: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker's output for one item: a 1.5 s, 24 kHz WAV and what it reports about it."""
    samples = noise(1.5, 24000)
    return [
        {
            "audio_base64": wav_b64(samples, 24000),
            "format": "wav",
            "sample_rate": 24000,
            "duration_s": 1.5,
            "seed": job_input.get("seed", 0),
        }
    ]


def good_speech(_request: dict[str, Any]) -> bytes:
    """A streamed WAV as HTTP mode sends it: the 0xFFFFFFFF-size header, then 16-bit PCM."""
    pcm = (np.clip(noise(1.0, 24000), -1, 1) * 32767).astype("<i2").tobytes()
    return wav_header(24000) + pcm


@dataclass
class FakeRunPod:
    api_key: str
    url: str = ""
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    job_output: Callable[[dict[str, Any]], Any] = good_job_output
    job_status: str = "COMPLETED"
    runsync_http_status: int = 200
    speech_body: Callable[[dict[str, Any]], bytes] = good_speech
    speech_http_status: int = 200
    ping_statuses: list[int] = field(default_factory=list)
    _ids: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}"

    def mutations(self) -> list[str]:
        """Which changes were asked for, in order: 'saveTemplate', 'PATCH /v1/templates/..'..."""
        out = []
        for method, path, body in self.calls:
            if method == "POST" and path == "/graphql":
                query = body.get("query", "")
                for name in ("saveTemplate", "saveEndpoint", "updateEndpointTemplate"):
                    if re.search(rf"\b{name}\s*\(", query):
                        out.append(name)
            elif method in ("PATCH", "DELETE"):
                out.append(f"{method} {path}")
        return out

    # GraphQL ------------------------------------------------------------------------------
    def graphql(self, query: str) -> dict[str, Any]:
        if re.search(r"\bsaveTemplate\s*\(", query):
            return {"saveTemplate": self._save_template(mutation_input(query, "saveTemplate"))}
        if re.search(r"\bsaveEndpoint\s*\(", query):
            return {"saveEndpoint": self._save_endpoint(mutation_input(query, "saveEndpoint"))}
        if re.search(r"\bupdateEndpointTemplate\s*\(", query):
            args = mutation_input(query, "updateEndpointTemplate")
            ep = self._endpoint(args["endpointId"])
            self._template(args["templateId"])
            ep["templateId"] = args["templateId"]
            return {"updateEndpointTemplate": {"id": ep["id"], "templateId": ep["templateId"]}}
        if re.search(r"\bmyself\b", query) and re.search(r"\bendpoints\b", query):
            return {"myself": {"endpoints": [dict(ep) for ep in self.endpoints.values()]}}
        raise ValueError("the fake does not know this query")

    def _template(self, template_id: str) -> dict[str, Any]:
        if template_id not in self.templates:
            raise ValueError(f"template {template_id} not found")
        return self.templates[template_id]

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        if endpoint_id not in self.endpoints:
            raise ValueError(f"endpoint {endpoint_id} not found")
        return self.endpoints[endpoint_id]

    def _save_template(self, inp: dict[str, Any]) -> dict[str, Any]:
        if any(t["name"] == inp["name"] for t in self.templates.values()):
            raise ValueError("Template name must be unique")  # RunPod's rule for names
        tid = self.new_id("tpl")
        env = {item["key"]: item["value"] for item in inp.get("env", [])}
        self.templates[tid] = {
            "id": tid,
            "name": inp["name"],
            "imageName": inp["imageName"],
            "env": env,
            "containerDiskInGb": inp.get("containerDiskInGb", 10),
            "isServerless": bool(inp.get("isServerless")),
            "ports": [p for p in str(inp.get("ports", "")).split(",") if p],
        }
        t = self.templates[tid]
        return {**t, "env": [{"key": k, "value": v} for k, v in t["env"].items()]}

    def _save_endpoint(self, inp: dict[str, Any]) -> dict[str, Any]:
        if "id" in inp:
            ep = self._endpoint(inp["id"])
        else:
            ep = {
                "id": self.new_id("ep"),
                "type": "QB",
                "gpuCount": 1,
                "flashBootType": "OFF",
                "networkVolumeId": None,
                "allowedCudaVersions": "",
                "scalerType": "QUEUE_DELAY",
                "scalerValue": 4,
                "idleTimeout": 5,
                "workersMin": 0,
                "workersMax": 3,
            }
        for key, value in inp.items():
            if key == "type" and "id" in inp and value != ep["type"]:
                raise ValueError("endpoint type cannot be changed")
            if key in ("id", "locations"):
                continue
            ep[key] = value or None if key == "networkVolumeId" else value
        if ep["type"] not in ("QB", "LB"):
            raise ValueError(f"bad endpoint type {ep['type']}")
        self._template(ep["templateId"])
        self.endpoints[ep["id"]] = ep
        return dict(ep)

    # REST ---------------------------------------------------------------------------------
    def rest(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        parts = path.strip("/").split("/")[1:]  # after "v1"
        if parts == ["templates"] and method == "GET":
            bound = {ep["templateId"] for ep in self.endpoints.values()}
            with_bound = query.get("includeEndpointBoundTemplates", ["false"])[0] == "true"
            return [t for tid, t in self.templates.items() if with_bound or tid not in bound]
        if len(parts) == 2 and parts[0] == "templates" and method == "PATCH":
            t = self._template(parts[1])
            allowed = {"imageName", "env", "containerDiskInGb", "name", "ports", "readme"}
            bad = set(body) - allowed - {"volumeInGb", "volumeMountPath", "isPublic"}
            if bad:
                raise KeyError(f"unknown fields {sorted(bad)}")
            t.update(body)
            return t
        if parts == ["endpoints"] and method == "GET":
            return [self._rest_endpoint(ep) for ep in self.endpoints.values()]
        if len(parts) == 2 and parts[0] == "endpoints" and method == "PATCH":
            ep = self._endpoint(parts[1])
            allowed = {
                "allowedCudaVersions",
                "cpuFlavorIds",
                "dataCenterIds",
                "executionTimeoutMs",
                "flashboot",
                "gpuCount",
                "gpuTypeIds",
                "idleTimeout",
                "minCudaVersion",
                "name",
                "networkVolumeId",
                "networkVolumeIds",
                "scalerType",
                "scalerValue",
                "templateId",
                "vcpuCount",
                "workersMax",
                "workersMin",
            }  # fmt: skip  (EndpointUpdateInput)
            bad = set(body) - allowed
            if bad:
                raise KeyError(f"unknown fields {sorted(bad)}")
            for key, value in body.items():
                if key == "flashboot":
                    ep["flashBootType"] = "FLASHBOOT" if value else "OFF"
                elif key == "allowedCudaVersions":
                    ep[key] = ",".join(value)
                elif key == "templateId":
                    self._template(value)
                    ep[key] = value
                else:
                    ep[key] = value
            return self._rest_endpoint(ep)
        raise FileNotFoundError(path)

    def _rest_endpoint(self, ep: dict[str, Any]) -> dict[str, Any]:
        """The REST shape of an endpoint (no pools, type or FlashBoot in it)."""
        return {
            "id": ep["id"],
            "name": ep["name"],
            "templateId": ep["templateId"],
            "gpuCount": ep["gpuCount"],
            "workersMin": ep["workersMin"],
            "workersMax": ep["workersMax"],
            "idleTimeout": ep["idleTimeout"],
            "networkVolumeId": ep["networkVolumeId"],
            "allowedCudaVersions": [v for v in ep["allowedCudaVersions"].split(",") if v],
            "env": dict(self.templates[ep["templateId"]]["env"]),
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeRunPod

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _route(self, method: str) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        body: Any = self._body() if method in ("POST", "PATCH") else {}
        with fake.lock:
            fake.calls.append((method, path, body))
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._send(401, {"error": "Unauthorized"})
            return
        try:
            with fake.lock:
                if path == "/graphql" and method == "POST":
                    try:
                        self._send(200, {"data": fake.graphql(body.get("query", ""))})
                    except (ValueError, KeyError) as exc:
                        self._send(200, {"errors": [{"message": str(exc)}]})
                    return
                if path.startswith("/v1/") and not path.startswith("/v1/audio"):
                    try:
                        self._send(200, fake.rest(method, path, query, body))
                    except FileNotFoundError:
                        self._send(404, {"error": "not found"})
                    except (ValueError, KeyError) as exc:
                        self._send(400, {"error": str(exc)})
                    return
            if path.startswith("/v2/"):
                self._job_api(method, path.split("/")[2:], body)
            elif path.startswith("/lb/"):
                self._lb(method, path.split("/", 3)[3] if path.count("/") >= 3 else "", body)
            else:
                self._send(404, {"error": "not found"})
        except BrokenPipeError:
            pass

    def _job_api(self, method: str, parts: list[str], body: Any) -> None:
        fake = self.fake
        if len(parts) == 2 and parts[1] == "runsync" and method == "POST":
            if fake.runsync_http_status != 200:
                self._send(fake.runsync_http_status, {"error": "fake gateway error"})
                return
            job_id = fake.new_id("job")
            reply: dict[str, Any] = {"id": job_id, "status": fake.job_status}
            if fake.job_status == "COMPLETED":
                reply["output"] = fake.job_output(body.get("input", {}))
            elif fake.job_status == "FAILED":
                reply["error"] = "TEXT_TOO_LONG: fake failure"
            self._send(200, reply)
        elif len(parts) == 3 and parts[1] == "status" and method == "GET":
            self._send(200, {"id": parts[2], "status": fake.job_status})
        else:
            self._send(404, {"error": "not found"})

    def _lb(self, method: str, route: str, body: Any) -> None:
        fake = self.fake
        if route == "ping" and method == "GET":
            with fake.lock:
                status = fake.ping_statuses.pop(0) if fake.ping_statuses else 200
            self._send(status, b"" if status == 204 else {"status": "healthy"})
        elif route == "v1/audio/speech" and method == "POST":
            if fake.speech_http_status != 200:
                self._send(fake.speech_http_status, {"error": {"message": "fake error"}})
                return
            self._send(200, fake.speech_body(body), "audio/wav")
        else:
            self._send(404, {"error": "not found"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")


@contextmanager
def fake_runpod_api(api_key: str) -> Iterator[FakeRunPod]:
    """A FakeRunPod serving on an ephemeral port of 127.0.0.1 until the block ends."""
    fake = FakeRunPod(api_key=api_key)
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
