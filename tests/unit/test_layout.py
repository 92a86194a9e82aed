"""Where the tests are: a newcomer finds a module's unit test by its name.

Every module `f5worker/<pkg>/.../<name>.py` has `tests/unit/<pkg>/test_<name>.py` (root modules:
`tests/unit/test_<name>.py`), or is listed in ELSEWHERE with the test file that covers it: a
scenario test in tests/integration/, or the unit test of the module it serves. And no test module
imports another: shared tables and builders live in data modules (tests/cases/) or conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

from f5worker.testing import REPO

PACKAGE = REPO / "f5worker"
TESTS = REPO / "tests"

# module -> the test file that covers it, for modules without a unit test of their own. Keep it
# honest: an entry must name an existing file, and goes once the module gets its own test.
ELSEWHERE = {
    # The engine needs the demo model (torch, f5-tts): tested end to end on it.
    "engine/f5tts.py": "tests/integration/test_engine.py",
    "engine/loading.py": "tests/integration/test_engine.py",
    "engine/plan.py": "tests/integration/test_engine.py",
    "engine/reference_cache.py": "tests/integration/test_engine.py",
    "engine/sampler.py": "tests/integration/test_engine.py",
    # The job path: a worker composed with its collaborators, run on the demo engine.
    "job/batch.py": "tests/integration/test_batch.py",
    "job/prepared.py": "tests/integration/test_job_control.py",
    "job/shaping.py": "tests/integration/test_handler.py",
    "job/synthesis.py": "tests/integration/test_handler.py",
    "job/worker.py": "tests/integration/test_handler.py",
    "startup/compose.py": "tests/integration/test_handler.py",
    # Tested through the module they serve.
    "job/models.py": "tests/unit/test_model_ref.py",  # ModelPool beside parse_models
    "job/voice_store.py": "tests/unit/job/test_voice_actions.py",
    "safe_fetch.py": "tests/unit/job/test_fetch.py",
    "redact.py": "tests/unit/startup/test_diagnostics.py",
    "serve/queue.py": "tests/unit/serve/test_progress.py",  # QueueHandler's progress flush
    "startup/flash_attn_install.py": "tests/integration/test_flash_attn_install.py",
    # the bake against a real HTTPS wheel server on 127.0.0.1
    "startup/flash_attn_bake.py": "tests/integration/test_flash_attn_install.py",
    # The settings table and its readers: through Settings.from_env, as a caller uses them.
    "config/table.py": "tests/unit/test_config.py",
    "config/values.py": "tests/unit/test_config.py",
    "config/__main__.py": "tests/unit/test_readme.py",  # the generated configuration tables
    "wheel_checks.py": "tests/unit/startup/test_flash_attn_wheels.py",
    # The model cache: sync, upload, layout and fill are one cycle, tested as one.
    "files.py": "tests/unit/models/test_s3_sync.py",
    "models/fill.py": "tests/unit/models/test_s3_sync.py",
    "models/ranged.py": "tests/unit/models/test_s3_sync.py",
    "models/s3_layout.py": "tests/unit/models/test_s3_sync.py",
    "models/s3_upload.py": "tests/unit/models/test_s3_sync.py",
    "models/demo.py": "tests/integration/test_models.py",
    "models/hf_cache.py": "tests/unit/models/test_runpod_cache.py",
    "models/source.py": "tests/integration/test_models.py",
    "models/spec.py": "tests/integration/test_models.py",
    # The entry points: real processes.
    "log_setup.py": "tests/integration/test_startup.py",
    "startup/main.py": "tests/integration/test_startup.py",
    "serve/http/serve.py": "tests/integration/test_http_startup.py",
    "serve/http/service.py": "tests/integration/test_http_control.py",
    "serve/http/speech.py": "tests/integration/test_http_openai.py",
    "serve/http/speech_route.py": "tests/integration/test_http_openai.py",
    "serve/http/native.py": "tests/integration/test_http_native.py",
    "serve/http/ws_route.py": "tests/integration/test_http_websocket.py",
    "serve/http/requests.py": "tests/unit/serve/test_app.py",  # through the app's routes
}


def modules() -> list[str]:
    """Paths under f5worker/ of the worker's modules (test support and __init__ left out)."""
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and path.relative_to(PACKAGE).parts[0] != "testing"
    )


def unit_test_of(module: str) -> Path:
    """engine/plan.py -> tests/unit/engine/test_plan.py; serve/http/sse.py ->
    tests/unit/serve/test_sse.py; audio.py -> tests/unit/test_audio.py."""
    parts = Path(module).parts
    folder = TESTS / "unit" / parts[0] if len(parts) > 1 else TESTS / "unit"
    return folder / f"test_{Path(module).stem}.py"


def test_every_module_has_a_unit_test_named_after_it_or_says_where_it_is_tested():
    missing = [m for m in modules() if not unit_test_of(m).exists() and m not in ELSEWHERE]
    assert missing == [], f"add {[str(unit_test_of(m).relative_to(REPO)) for m in missing]}"


def test_the_list_of_modules_tested_elsewhere_is_honest():
    stale = [m for m in ELSEWHERE if m not in modules() or unit_test_of(m).exists()]
    assert stale == [], "gone, or has its own unit test now: remove from ELSEWHERE"
    assert [f for f in ELSEWHERE.values() if not (REPO / f).is_file()] == []


def imported_modules(path: Path) -> set[str]:
    """The dotted names a file imports, relative imports resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another():
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert offenders == []
