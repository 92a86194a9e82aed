#!/usr/bin/env python3
"""Create or update this worker's RunPod template and endpoint from a few flags or a small file.

    RUNPOD_API_KEY=... scripts/deploy.py --config deploy.toml
    RUNPOD_API_KEY=... scripts/deploy.py --name f5-tts --image docker.io/me/f5-tts-worker \
        --version v1.4.0 --mode queue --gpus AMPERE_24,ADA_24 --workers-max 3 \
        --s3-bucket my-bucket --secret AWS_ACCESS_KEY_ID=s3_key_id \
        --secret AWS_SECRET_ACCESS_KEY=s3_secret

Idempotent: the template (`<name>-template`) and the endpoint (`<name>`) are looked up by name,
compared field by field with what the input asks for, and only what differs is changed; a run
that changes nothing prints "unchanged". Secrets are passed by reference only (RunPod's
`{{ RUNPOD_SECRET_<name> }}` in an env value): this script never reads a secret's value, and
refuses a plain value for a credential-named variable. The API key comes from RUNPOD_API_KEY
and is never printed (errors are redacted).

Which API does what (fields and their sources: docs/operations.md, "Deploy on RunPod"):
- the runpod SDK (GraphQL, `RUNPOD_API_BASE_URL` or https://api.runpod.io): `create_template`,
  `create_endpoint` (queue endpoints), `update_endpoint_template`, and `run_graphql_query` for
  what its helpers lack: reading endpoints with their `type` and `flashBootType`, creating a
  load-balancing endpoint (its own `saveEndpoint` mutation plus `type: "LB"`) and changing
  an endpoint's GPU pools (`saveEndpoint` with the endpoint's `id`);
- RunPod's REST API (`RUNPOD_REST_BASE_URL` or https://rest.runpod.io/v1): `GET /templates`
  (finding the template by name), `PATCH /templates/{id}` and `PATCH /endpoints/{id}`, which
  the SDK does not have.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

DEFAULT_REST_BASE = "https://rest.runpod.io/v1"
QUEUE_BASE = "https://api.runpod.ai/v2"
HTTP_TIMEOUT_S = 30
# .runpod/hub.json's choices: Ampere or newer (flash-attn 2), CUDA 12.4 or newer.
DEFAULT_GPUS = ("AMPERE_16", "AMPERE_24", "ADA_24")
DEFAULT_CUDA = ("12.4", "12.5", "12.6", "12.7", "12.8")
# Variables whose value is a credential: only a RunPod secret reference may be set for them.
CREDENTIAL = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)
SECRET_REF = re.compile(r"^\{\{ RUNPOD_SECRET_[A-Za-z0-9_.-]+ \}\}$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
POOL = re.compile(r"^[A-Z0-9_]+$")
CUDA = re.compile(r"^\d+\.\d+$")
MODES = ("queue", "lb")


class DeployError(Exception):
    """A bad input or an API refusal: one line for the operator, exit status 1."""


def secret_ref(name: str) -> str:
    """RunPod's reference to the secret `name`, resolved by RunPod when a worker starts."""
    if not SECRET_NAME.match(name):
        raise DeployError(f"secret name {name!r}: letters, digits, '_', '-', '.' only")
    return f"{{{{ RUNPOD_SECRET_{name} }}}}"


def redact(text: str, key: str | None) -> str:
    """`text` without the API key, bearer tokens or `api_key=` query values in it."""
    if key:
        text = text.replace(key, "***")
    text = re.sub(r"(Bearer\s+)[^\s\"',}]+", r"\1***", text)
    return re.sub(r"(api_key=)[^&\s\"']+", r"\1***", text)


@dataclass(frozen=True)
class Spec:
    """What the operator asks for: everything deploy compares against RunPod's state."""

    name: str
    image: str
    mode: str = "queue"
    gpus: tuple[str, ...] = DEFAULT_GPUS
    gpu_count: int = 1
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 5
    flashboot: bool = True
    container_disk_gb: int = 20
    network_volume: str = ""
    cuda_versions: tuple[str, ...] = DEFAULT_CUDA
    scaler_value: int = 0  # 0: 4 s queue delay (queue), 1 request per worker (lb)
    env: Mapping[str, str] = field(default_factory=dict)
    cached_model: str = ""

    @property
    def template_name(self) -> str:
        return f"{self.name}-template"


# ----------------------------------------------------------------------------- the input


def image_ref(image: str, version: str) -> str:
    """`repo` + `version` -> `repo:version`; an image that already names a tag or digest is
    kept when no version is given. An untagged image without a version is refused (`latest`
    cannot say which build an endpoint runs)."""
    if not image:
        raise DeployError("--image is required")
    last = image.rsplit("/", 1)[-1]
    tagged = ":" in last or "@" in image
    if version:
        if tagged:
            raise DeployError(f"image {image!r} already has a tag; drop --version or the tag")
        return f"{image}:{version}"
    if not tagged:
        raise DeployError(f"image {image!r} has no tag: give --version (e.g. `git describe`)")
    return image


def hf_repo(model: str) -> str:
    """OWNER/REPO of an `hf://OWNER/REPO/...` model reference, else ""."""
    if not model.startswith("hf://"):
        return ""
    parts = model[len("hf://") :].split("?", 1)[0].split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 and all(parts[:2]) else ""


def default_model(model: str, models: str) -> str:
    """The reference a worker serves by default: MODELS' first entry, else MODEL_NAME."""
    if models:
        first = re.split(r"[,\n]", models, maxsplit=1)[0].strip()
        return first.split("=", 1)[1].strip() if "=" in first else first
    return model


def build_env(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The endpoint's environment: serving mode, model, S3 settings, secret references, and
    any extra `env` entries. Plain values for credential-named variables are refused."""
    env: dict[str, str] = {"SERVE_MODE": "http" if cfg["mode"] == "lb" else "queue"}
    if cfg.get("models"):
        env["MODELS"] = str(cfg["models"])
    else:
        env["MODEL_NAME"] = str(cfg.get("model") or "F5TTS_v1_Base")
    s3 = cfg.get("s3") or {}
    for key, var in (
        ("bucket", "S3_BUCKET"),
        ("prefix", "S3_PREFIX"),
        ("endpoint_url", "S3_ENDPOINT_URL"),
        ("region", "AWS_REGION"),
    ):
        if s3.get(key):
            env[var] = str(s3[key])
    for var, value in (cfg.get("env") or {}).items():
        env[str(var)] = str(value)
    for var, name in (cfg.get("secrets") or {}).items():
        if str(var) in (cfg.get("env") or {}):
            raise DeployError(f"env {var} is given both as a value and as a secret: keep one")
        env[str(var)] = secret_ref(str(name))
    for var, value in env.items():
        if not ENV_NAME.match(var):
            raise DeployError(f"env name {var!r}: upper-case letters, digits and '_' only")
        if any(c in value for c in '"\\\n\r'):
            raise DeployError(f"env {var}: quotes, backslashes and newlines are not allowed")
        if CREDENTIAL.search(var) and not SECRET_REF.match(value):
            raise DeployError(
                f"env {var} looks like a credential: pass it by reference "
                f"(--secret {var}=<runpod secret name>), never as a value"
            )
    return env


def load_file(path: str) -> dict[str, Any]:
    """A TOML (.toml) or JSON file of the same keys as the flags (see docs/operations.md)."""
    text = Path(path).read_text()
    try:
        data = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise DeployError(f"{path}: expected a table/object at the top")
    return data


def pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DeployError(f"{what} {item!r}: expected NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def csv(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())


FILE_KEYS = {
    "name", "image", "version", "mode", "gpus", "gpu_count", "workers_min", "workers_max",
    "idle_timeout", "flashboot", "container_disk_gb", "network_volume", "cuda_versions",
    "scaler_value", "model", "models", "cached_model", "s3", "secrets", "env",
}  # fmt: skip


def spec_from(cfg: Mapping[str, Any]) -> Spec:
    """A checked Spec from the merged file and flags."""
    unknown = set(cfg) - FILE_KEYS
    if unknown:
        raise DeployError(f"unknown settings: {', '.join(sorted(unknown))}")
    cfg = dict(cfg)
    cfg.setdefault("mode", "queue")
    if cfg["mode"] not in MODES:
        raise DeployError(f"mode {cfg['mode']!r}: one of {', '.join(MODES)}")
    name = str(cfg.get("name") or "")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$", name):
        raise DeployError("--name: 1-61 letters, digits, '_', '-', '.'")
    gpus = csv(cfg.get("gpus", DEFAULT_GPUS))
    if not gpus or not all(POOL.match(g) for g in gpus):
        raise DeployError(f"gpus {','.join(gpus)!r}: RunPod GPU pool ids such as AMPERE_24")
    cuda = csv(cfg.get("cuda_versions", DEFAULT_CUDA))
    if not all(CUDA.match(v) for v in cuda):
        raise DeployError(f"cuda_versions {','.join(cuda)!r}: major.minor, e.g. 12.4")
    ints = {}
    for key, low, high in (
        ("gpu_count", 1, 8),
        ("workers_min", 0, 100),
        ("workers_max", 0, 100),
        ("idle_timeout", 1, 3600),
        ("container_disk_gb", 5, 500),
        ("scaler_value", 0, 1000),
    ):
        if key in cfg:
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise DeployError(f"{key}: an integer")
            try:
                ints[key] = int(value)
            except ValueError:
                raise DeployError(f"{key}: an integer, not {value!r}") from None
            if not low <= ints[key] <= high:
                raise DeployError(f"{key}: {low}..{high}")
    env = build_env(cfg)
    cached = str(cfg.get("cached_model", "auto"))
    if cached == "auto":
        cached = hf_repo(default_model(env.get("MODEL_NAME", ""), env.get("MODELS", "")))
    spec = Spec(
        name=name,
        image=image_ref(str(cfg.get("image") or ""), str(cfg.get("version") or "")),
        mode=cfg["mode"],
        gpus=gpus,
        cuda_versions=tuple(sorted(cuda)),
        flashboot=bool(cfg.get("flashboot", True)),
        network_volume=str(cfg.get("network_volume") or ""),
        env=env,
        cached_model=cached,
        **ints,
    )
    if spec.workers_min > spec.workers_max:
        raise DeployError("workers_min is above workers_max")
    return spec


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--config", help="a TOML (.toml) or JSON file; flags override it")
    p.add_argument("--name", help="endpoint name; the template is <name>-template")
    p.add_argument("--image", help="image repository, e.g. docker.io/me/f5-tts-worker")
    p.add_argument("--version", help="image tag (build.sh's `git describe`)")
    p.add_argument("--mode", choices=MODES, help="queue (default) or lb (load-balancing)")
    p.add_argument(
        "--gpus", help="comma-separated GPU pool ids (default AMPERE_16,AMPERE_24,ADA_24)"
    )
    p.add_argument("--gpu-count", type=int)
    p.add_argument("--workers-min", type=int)
    p.add_argument("--workers-max", type=int)
    p.add_argument("--idle-timeout", type=int, help="seconds (default 5)")
    p.add_argument("--flashboot", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--container-disk-gb", type=int, help="default 20")
    p.add_argument("--network-volume", help="network volume id ('' for none)")
    p.add_argument("--cuda-versions", help="allowed CUDA versions (default 12.4-12.8)")
    p.add_argument("--scaler-value", type=int, help="queue delay s (queue) / requests (lb)")
    p.add_argument("--model", help="MODEL_NAME (default F5TTS_v1_Base)")
    p.add_argument("--models", help="MODELS (several models; overrides --model)")
    p.add_argument("--cached-model", help="RunPod cached model OWNER/REPO; default: from hf://")
    p.add_argument("--s3-bucket")
    p.add_argument("--s3-prefix")
    p.add_argument("--s3-endpoint-url")
    p.add_argument("--s3-region")
    p.add_argument("--secret", action="append", default=[], metavar="VAR=SECRET_NAME",
                   help="env VAR = {{ RUNPOD_SECRET_SECRET_NAME }}; repeatable")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="VAR=VALUE")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = p.parse_args(argv)
    cfg: dict[str, Any] = load_file(args.config) if args.config else {}
    flags = {
        key: getattr(args, key)
        for key in (
            "name",
            "image",
            "version",
            "mode",
            "gpus",
            "gpu_count",
            "workers_min",
            "workers_max",
            "idle_timeout",
            "flashboot",
            "container_disk_gb",
            "network_volume",
            "cuda_versions",
            "scaler_value",
            "model",
            "models",
            "cached_model",
        )
        if getattr(args, key) is not None
    }
    cfg.update(flags)
    s3 = dict(cfg.get("s3") or {})
    for key in ("bucket", "prefix", "endpoint_url", "region"):
        if getattr(args, f"s3_{key}") is not None:
            s3[key] = getattr(args, f"s3_{key}")
    if s3:
        cfg["s3"] = s3
    cfg["secrets"] = {**(cfg.get("secrets") or {}), **pairs(args.secret, "--secret")}
    cfg["env"] = {**(cfg.get("env") or {}), **pairs(args.env, "--env")}
    return args, cfg


# ----------------------------------------------------------------------------- desired state


def template_fields(spec: Spec) -> dict[str, Any]:
    """The template as RunPod's REST API shows it (the fields deploy owns)."""
    return {
        "imageName": spec.image,
        "env": dict(spec.env),
        "containerDiskInGb": spec.container_disk_gb,
    }


def endpoint_fields(spec: Spec, template_id: str) -> dict[str, Any]:
    """The endpoint as RunPod's GraphQL API shows it (the fields deploy owns)."""
    lb = spec.mode == "lb"
    return {
        "templateId": template_id,
        "type": "LB" if lb else "QB",
        "gpuIds": ",".join(spec.gpus),
        "gpuCount": spec.gpu_count,
        "workersMin": spec.workers_min,
        "workersMax": spec.workers_max,
        "idleTimeout": spec.idle_timeout,
        "flashBootType": "FLASHBOOT" if spec.flashboot else "OFF",
        "networkVolumeId": spec.network_volume,
        "allowedCudaVersions": ",".join(spec.cuda_versions),
        "scalerType": "REQUEST_COUNT" if lb else "QUEUE_DELAY",
        "scalerValue": spec.scaler_value or (1 if lb else 4),
    }


def _norm(key: str, value: Any) -> Any:
    """RunPod's spelling of a field, as deploy compares it (unset and empty are the same)."""
    if key == "allowedCudaVersions":
        items = value.split(",") if isinstance(value, str) else list(value or [])
        return ",".join(sorted(v.strip() for v in items if v.strip()))
    if key == "flashBootType":
        return value or "OFF"
    if key == "type":
        return value or "QB"
    if key == "env" and isinstance(value, list):  # GraphQL's [{key, value}]
        return {item["key"]: item["value"] for item in value}
    if value is None:
        return "" if key in ("networkVolumeId",) else value
    return value


def diff(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (current, wanted)} for every owned field that differs."""
    out = {}
    for key, value in wanted.items():
        have = _norm(key, current.get(key))
        want = _norm(key, value)
        if have != want:
            out[key] = (have, want)
    return out


def rest_endpoint_patch(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The REST `PATCH /endpoints/{id}` body for the changed fields it covers (EndpointUpdateInput:
    templateId, gpuCount, workersMin, workersMax, idleTimeout, flashboot, networkVolumeId,
    allowedCudaVersions, scalerType, scalerValue). Pools and type are not in it."""
    body: dict[str, Any] = {}
    for key, (_, want) in changes.items():
        if key == "flashBootType":
            body["flashboot"] = want != "OFF"
        elif key == "allowedCudaVersions":
            body[key] = [v for v in want.split(",") if v]
        elif key in ("gpuIds", "type"):
            continue
        else:
            body[key] = want
    return body


def show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value) if isinstance(value, str) else str(value)


def describe(changes: Mapping[str, tuple[Any, Any]]) -> list[str]:
    """One line per changed field; an env change names only the variables that differ."""
    lines = []
    for key, (have, want) in changes.items():
        if key == "env":
            have, want = have or {}, want or {}
            for var in sorted(set(have) | set(want)):
                if have.get(var) != want.get(var):
                    old = show(have[var]) if var in have else "(unset)"
                    new = show(want[var]) if var in want else "(unset)"
                    lines.append(f"env {var}: {old} -> {new}")
        else:
            lines.append(f"{key}: {show(have)} -> {show(want)}")
    return lines


def urls(endpoint_id: str, mode: str) -> list[tuple[str, str]]:
    """The endpoint's request URLs (RunPod's documented shapes)."""
    if mode == "lb":
        base = f"https://{endpoint_id}.api.runpod.ai"
        return [
            ("base", base),
            ("ping", f"{base}/ping"),
            ("speech", f"{base}/v1/audio/speech  (OpenAI base_url {base}/v1)"),
            ("runsync", f"{base}/runsync"),
        ]
    base = f"{QUEUE_BASE}/{endpoint_id}"
    return [
        ("run", f"{base}/run"),
        ("runsync", f"{base}/runsync"),
        ("status", f"{base}/status/<job_id>"),
        ("stream", f"{base}/stream/<job_id>"),
        ("cancel", f"{base}/cancel/<job_id>"),
        ("health", f"{base}/health"),
        ("openai", f"{base}/openai/v1  (RunPod's OpenAI-compatible route)"),
    ]


# ----------------------------------------------------------------------------- RunPod's APIs

ENDPOINTS_QUERY = """
query Endpoints {
  myself {
    endpoints {
      id name templateId type gpuIds gpuCount workersMin workersMax idleTimeout
      networkVolumeId flashBootType allowedCudaVersions scalerType scalerValue
    }
  }
}
"""


class RunPodAPI:
    """The calls deploy makes, each one request with a timeout and no retry."""

    def __init__(self, api_key: str, rest_base: str = DEFAULT_REST_BASE) -> None:
        import runpod  # the SDK: imported here so --help works without it

        self.runpod = runpod
        runpod.api_key = api_key
        self.key = api_key
        self.rest_base = rest_base.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update(
            {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        )

    # REST
    def _rest(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.rest_base}{path}"
        response = self.http.request(method, url, json=body, timeout=HTTP_TIMEOUT_S)
        if response.status_code >= 400:
            raise DeployError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def templates(self) -> list[dict[str, Any]]:
        # Templates an endpoint uses are left out of the list unless asked for.
        found = self._rest("GET", "/templates?includeEndpointBoundTemplates=true")
        return list(found or [])

    def patch_template(self, template_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._rest("PATCH", f"/templates/{template_id}", body) or {})

    def patch_endpoint(self, endpoint_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._rest("PATCH", f"/endpoints/{endpoint_id}", body) or {})

    # GraphQL, through the SDK
    def _graphql(self, query: str) -> dict[str, Any]:
        from runpod.api.graphql import run_graphql_query

        return dict(run_graphql_query(query, api_key=self.key)["data"])

    def endpoints(self) -> list[dict[str, Any]]:
        return list(self._graphql(ENDPOINTS_QUERY)["myself"]["endpoints"] or [])

    def create_template(self, spec: Spec) -> dict[str, Any]:
        return dict(
            self.runpod.create_template(
                name=spec.template_name,
                image_name=spec.image,
                container_disk_in_gb=spec.container_disk_gb,
                env=dict(spec.env),
                is_serverless=True,
            )
        )

    def create_endpoint(self, spec: Spec, template_id: str) -> dict[str, Any]:
        want = endpoint_fields(spec, template_id)
        args = dict(
            name=spec.name,
            template_id=template_id,
            gpu_ids=want["gpuIds"],
            network_volume_id=spec.network_volume or None,
            idle_timeout=spec.idle_timeout,
            scaler_type=want["scalerType"],
            scaler_value=want["scalerValue"],
            workers_min=spec.workers_min,
            workers_max=spec.workers_max,
            flashboot=spec.flashboot,
            allowed_cuda_versions=want["allowedCudaVersions"],
            gpu_count=spec.gpu_count,
        )
        if spec.mode == "queue":
            return dict(self.runpod.create_endpoint(**args))
        # The SDK's own saveEndpoint mutation, plus the documented `type: "LB"` it cannot send.
        from runpod.api.mutations.endpoints import generate_endpoint_mutation

        mutation = generate_endpoint_mutation(**args).replace(
            "input: {", 'input: {\n                type: "LB",', 1
        )
        return dict(self._graphql(mutation)["saveEndpoint"])

    def set_pools(self, endpoint: Mapping[str, Any], gpu_ids: str) -> None:
        """saveEndpoint with the endpoint's id changes it (RunPod's GraphQL docs); its name,
        template and pools are sent, as their example does."""
        fields = ", ".join(
            f"{k}: {json.dumps(v)}"
            for k, v in (
                ("id", endpoint["id"]),
                ("name", endpoint["name"]),
                ("templateId", endpoint["templateId"]),
                ("gpuIds", gpu_ids),
            )
        )
        self._graphql(f"mutation {{ saveEndpoint(input: {{ {fields} }}) {{ id gpuIds }} }}")

    def set_template(self, endpoint_id: str, template_id: str) -> None:
        self.runpod.update_endpoint_template(endpoint_id=endpoint_id, template_id=template_id)


# ----------------------------------------------------------------------------- the run


def one_named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any] | None:
    found = [item for item in items if item.get("name") == name]
    if len(found) > 1:
        ids = ", ".join(str(item.get("id")) for item in found)
        raise DeployError(f"{len(found)} {what}s are named {name!r} ({ids}): rename or delete one")
    return found[0] if found else None


def deploy(spec: Spec, api: RunPodAPI, out: Callable[[str], None], dry_run: bool = False) -> str:
    """Bring the template and endpoint to `spec`; returns the endpoint id ("" on a dry run
    that would create it). Prints one line per action and "unchanged" when there was none."""
    changed = False
    tpl = one_named(api.templates(), spec.template_name, "template")
    if tpl is None:
        out(f"template {spec.template_name}: create (image {spec.image})")
        template_id = "" if dry_run else str(api.create_template(spec)["id"])
        changed = True
    else:
        template_id = str(tpl["id"])
        if tpl.get("isServerless") is False:
            raise DeployError(f"template {spec.template_name} ({template_id}) is a pod template")
        changes = diff(tpl, template_fields(spec))
        if changes:
            for line in describe(changes):
                out(f"template {spec.template_name} ({template_id}): {line}")
            if not dry_run:
                api.patch_template(template_id, {k: want for k, (_, want) in changes.items()})
            changed = True
        else:
            out(f"template {spec.template_name} ({template_id}): unchanged")

    ep = one_named(api.endpoints(), spec.name, "endpoint")
    if ep is None:
        out(f"endpoint {spec.name}: create ({spec.mode}, pools {','.join(spec.gpus)})")
        endpoint_id = "" if dry_run else str(api.create_endpoint(spec, template_id)["id"])
        changed = True
    else:
        endpoint_id = str(ep["id"])
        changes = diff(ep, endpoint_fields(spec, template_id or str(ep.get("templateId"))))
        if "type" in changes:
            have, want = changes["type"]
            raise DeployError(
                f"endpoint {spec.name} ({endpoint_id}) is type {have}, not {want}: RunPod does "
                f"not change an endpoint's type; delete it or deploy under another --name"
            )
        if changes:
            for line in describe(changes):
                out(f"endpoint {spec.name} ({endpoint_id}): {line}")
            if not dry_run:
                if "templateId" in changes:
                    api.set_template(endpoint_id, changes["templateId"][1])
                body = rest_endpoint_patch({k: v for k, v in changes.items() if k != "templateId"})
                if body:
                    api.patch_endpoint(endpoint_id, body)
                if "gpuIds" in changes:
                    api.set_pools({**ep, "templateId": template_id}, changes["gpuIds"][1])
            changed = True
        else:
            out(f"endpoint {spec.name} ({endpoint_id}): unchanged")

    if spec.cached_model:
        out(
            f"cached model: set the endpoint's Model to {spec.cached_model} in the console "
            f"(Manage -> Edit Endpoint -> Model): RunPod documents no API field for it"
        )
    out("unchanged" if not changed else ("dry run: nothing changed" if dry_run else "done"))
    if endpoint_id:
        kind = "load-balancing" if spec.mode == "lb" else "queue"
        out(f"{kind} endpoint {endpoint_id}:")
        for label, url in urls(endpoint_id, spec.mode):
            out(f"  {label:8} {url}")
        smoke_mode = " --mode lb" if spec.mode == "lb" else ""
        out(f"smoke test: scripts/smoke.py {endpoint_id}{smoke_mode}")
    return endpoint_id


def main(argv: Sequence[str] | None = None) -> int:
    key = os.environ.get("RUNPOD_API_KEY", "")
    try:
        args, cfg = parse_args(sys.argv[1:] if argv is None else argv)
        spec = spec_from(cfg)
        if not key:
            raise DeployError("RUNPOD_API_KEY is not set")
        api = RunPodAPI(key, os.environ.get("RUNPOD_REST_BASE_URL", DEFAULT_REST_BASE))
        deploy(spec, api, print, dry_run=args.dry_run)
    except DeployError as exc:
        print(f"deploy: {redact(str(exc), key)}", file=sys.stderr)
        return 1
    except Exception as exc:  # the SDK's and requests' errors: one redacted line, no traceback
        print(f"deploy: {type(exc).__name__}: {redact(str(exc), key)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
