"""flash-attn wheel selection, named the way flash-attn's own setup.py names its release wheels,
and the pins and settings that decide whether a wheel may be installed at all."""

import ast
import hashlib
import importlib.util
import itertools
import json
import re

import pytest

from f5worker.config import Settings
from f5worker.errors import ConfigError
from f5worker.startup import flash_attn_bake
from f5worker.startup.flash_attn_install import RECORD, demangle, explain_load_error
from f5worker.startup.flash_attn_wheels import (
    BASE_WHEEL_URL,
    PINS_FILE,
    RELEASES,
    NoMatchingWheel,
    NotPinned,
    TorchBuild,
    load_pins,
    parse_wheel_url,
    pinned_sha256,
    require_pin,
    select_wheel,
    wheel_file_name,
    wheel_name,
)
from f5worker.testing import REPO


def build(torch, cuda, abi=False, python="cp311", plat="linux_x86_64"):
    return TorchBuild(torch, cuda, abi, python, plat, cuda_available=True)


# (running torch, torch.version.cuda, cxx11abi, CPython) -> the release wheel to install
SELECTION = [
    # The RunPod torch 2.4.0 / CUDA 12.4 / py3.11 image (pip torch: old ABI).
    (
        build("2.4.0+cu124", "12.4"),
        "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl",
    ),
    # The same tag once carried a cu121 build; the wheel follows the torch, not the tag.
    (
        build("2.4.1+cu121", "12.1"),
        "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl",
    ),
    # An NGC-style torch compiled with the new C++ ABI needs the cxx11abiTRUE wheel.
    (
        build("2.4.0a0+3bcc3cd", "12.4", abi=True),
        "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",
    ),
    (
        build("2.6.0+cu124", "12.4", python="cp312"),
        "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp312-cp312-linux_x86_64.whl",
    ),
    (
        build("2.2.2+cu121", "12.1", python="cp310"),
        "flash_attn-2.7.4.post1+cu12torch2.2cxx11abiFALSE-cp310-cp310-linux_x86_64.whl",
    ),
    # torch 2.7+ has no 2.7.4.post1 wheel; 2.8.3 (CUDA 12.9 build) is the next candidate.
    (
        build("2.7.1+cu126", "12.6", abi=True),
        "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",
    ),
    (
        build("2.8.0+cu128", "12.8", abi=True, python="cp313"),
        "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp313-cp313-linux_x86_64.whl",
    ),
    # CUDA 11 torch: only 2.6.3 ships cu118 wheels (2.6.x spells major+minor: cu118 / cu123).
    (
        build("2.4.0+cu118", "11.8"),
        "flash_attn-2.6.3+cu118torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl",
    ),
    (
        build("2.1.2+cu121", "12.1", python="cp310"),
        "flash_attn-2.6.3+cu123torch2.1cxx11abiFALSE-cp310-cp310-linux_x86_64.whl",
    ),
    (
        build("2.4.0+cu124", "12.4", plat="linux_aarch64"),
        "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_aarch64.whl",
    ),
]


@pytest.mark.parametrize(
    ("torch_build", "expected"), SELECTION, ids=lambda v: getattr(v, "torch", v)
)
def test_selection_table(torch_build, expected):
    wheel = select_wheel(torch_build)
    assert wheel.name == expected
    assert wheel.url == BASE_WHEEL_URL.format(version=wheel.version, name=expected)
    assert wheel.url.startswith(
        f"https://github.com/Dao-AILab/flash-attention/releases/download/v{wheel.version}/"
    )


NO_WHEEL = [
    (build("2.4.0+cpu", None), "CPU build"),
    (build("2.9.0+cu128", "12.8"), "torch 2.9"),
    (build("2.5.1+cu118", "11.8"), "torch 2.5, CUDA 11.8"),
    (build("2.4.0+cu124", "12.4", python="cp314"), "cp314"),
    (build("2.4.0", "12.4", plat="win_amd64"), "win_amd64"),
]


@pytest.mark.parametrize(("torch_build", "reason"), NO_WHEEL, ids=lambda v: getattr(v, "torch", v))
def test_no_matching_wheel_names_the_field(torch_build, reason):
    with pytest.raises(NoMatchingWheel, match=reason):
        select_wheel(torch_build)


@pytest.mark.parametrize(
    ("patch", "cuda", "abi", "python"),
    list(
        itertools.product(
            ("2.4.0", "2.4.1", "2.4.0+cu121", "2.4.0+cu124"),
            ("12.1", "12.4", "12.6"),
            (False, True),
            ("cp39", "cp310", "cp311", "cp312"),
        )
    ),
)
def test_torch_24_never_gets_a_wheel_built_for_another_torch(patch, cuda, abi, python):
    """The seed's failure: a torch 2.6 wheel on torch 2.4 breaks `import f5_tts`."""
    wheel = select_wheel(build(patch, cuda, abi, python))
    assert "torch2.4cxx11abi" in wheel.name
    assert f"cxx11abi{'TRUE' if abi else 'FALSE'}" in wheel.name
    assert wheel.version == "2.7.4.post1"  # not 2.8.x: built with CUDA 12.9, fails on old torch
    assert wheel.torch_minor == "2.4" and wheel.cxx11abi is abi


def test_release_table_matches_setup_py_naming():
    """2.6.x named its CUDA tag major+minor (cu118, cu123); 2.7 and later only the major."""
    tags = {rel.version: set(rel.cuda_tags.values()) for rel in RELEASES}
    assert tags == {"2.7.4.post1": {"cu12"}, "2.8.3": {"cu12"}, "2.6.3": {"cu118", "cu123"}}
    assert (
        wheel_name("2.6.3", "cu123", "2.4", True, "cp311", "linux_x86_64")
        == "flash_attn-2.6.3+cu123torch2.4cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    )


@pytest.mark.parametrize(
    ("torch_build", "expected"), SELECTION, ids=lambda v: getattr(v, "torch", v)
)
def test_wheel_url_round_trips(torch_build, expected):
    wheel = select_wheel(torch_build)
    parsed = parse_wheel_url(wheel.url.replace("+", "%2B"))
    assert (parsed.version, parsed.name, parsed.torch_minor, parsed.cxx11abi) == (
        wheel.version,
        expected,
        wheel.torch_minor,
        wheel.cxx11abi,
    )


@pytest.mark.parametrize(
    "url", ["https://example.com/flash_attn-2.7.4-cp311-cp311-linux_x86_64.whl", "/tmp/x.whl"]
)
def test_non_release_names_parse_to_none(url):
    assert parse_wheel_url(url) is None


NEW_ABI_SYMBOL = (
    "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
)
OLD_ABI_SYMBOL = "_ZN3c105ErrorC2ENS_14SourceLocationESs"
OTHER_TORCH_SYMBOL = "_ZN2at4_ops5zeros4callEN3c108ArrayRefINS2_6SymIntEEE"


@pytest.mark.parametrize(
    ("symbol", "readable"),
    [
        (OLD_ABI_SYMBOL, "c10::Error::Error(c10::SourceLocation, std::string)"),
        (NEW_ABI_SYMBOL, "std::__cxx11::basic_string<char"),
        ("not_a_cpp_symbol", "not_a_cpp_symbol"),
    ],
)
def test_demangle(symbol, readable):
    assert readable in demangle(symbol)


RUNNING = build("2.4.0+cu124", "12.4", abi=False)
WHEEL_26_TRUE = parse_wheel_url(
    "https://x/flash_attn-2.7.4.post1+cu12torch2.6cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
)
WHEEL_24_FALSE = parse_wheel_url(
    "https://x/flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
)


def undefined(symbol):
    return (
        "Traceback (most recent call last):\n  ...\nImportError: /usr/lib/python3/flash_attn_2_cuda"
        f".cpython-311-x86_64-linux-gnu.so: undefined symbol: {symbol}\n"
    )


@pytest.mark.parametrize(
    ("error", "wheel", "running", "expected"),
    [
        (
            undefined(NEW_ABI_SYMBOL),
            WHEEL_26_TRUE,
            RUNNING,
            [
                "torch/ABI mismatch",
                "wheel built for torch 2.6 cxx11abi=TRUE",
                "running torch 2.4.0+cu124 cxx11abi=FALSE",
                "std::__cxx11::basic_string",
                "a new-ABI (cxx11abiTRUE) wheel on an old-ABI torch",
            ],
        ),
        (
            undefined(OLD_ABI_SYMBOL),
            WHEEL_24_FALSE,
            build("2.4.0a0", "12.4", abi=True),
            [
                "torch/ABI mismatch",
                "wheel built for torch 2.4 cxx11abi=FALSE",
                "running torch 2.4.0a0 cxx11abi=TRUE",
                "an old-ABI (cxx11abiFALSE) wheel on a new-ABI torch",
            ],
        ),
        (
            undefined(OTHER_TORCH_SYMBOL),
            WHEEL_26_TRUE,
            RUNNING,
            ["torch/ABI mismatch", "torch 2.6", "running torch 2.4.0+cu124", "another torch"],
        ),
        (
            undefined(OTHER_TORCH_SYMBOL),
            None,
            RUNNING,
            ["an unknown torch (not a release wheel name)", "running torch 2.4.0+cu124"],
        ),
        (
            "ImportError: libcudart.so.12: cannot open shared object file\n",
            WHEEL_24_FALSE,
            RUNNING,
            ["flash_attn_2_cuda does not load: ImportError: libcudart.so.12"],
        ),
    ],
)
def test_load_errors_are_explained(error, wheel, running, expected):
    message = explain_load_error(error, wheel, running)
    for part in expected:
        assert part in message
    if "undefined symbol" not in error:
        assert "mismatch" not in message


IMAGE_WHEEL = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
DIGEST = "ab" * 32


def test_selection_carries_the_pin_or_none():
    image = build("2.4.0+cu124", "12.4")
    pinned = select_wheel(image, pins={IMAGE_WHEEL: DIGEST})
    assert pinned.sha256 == DIGEST and require_pin(pinned) == DIGEST
    unpinned = select_wheel(image, pins={})
    assert unpinned.name == IMAGE_WHEEL and unpinned.sha256 is None
    with pytest.raises(NotPinned) as info:
        require_pin(unpinned)
    message = str(info.value)
    assert isinstance(info.value, NoMatchingWheel)  # the same fallback path as "no wheel"
    assert f"{IMAGE_WHEEL} has no pinned sha256, so it is not installed at run time" in message
    assert "FLASH_ATTN_WHEEL_SHA256" in message and "\n" not in message


def test_shipped_pin_table_is_well_formed_and_only_pins_selectable_wheels():
    """Every entry is a release wheel the selection can pick, with a 64-hex sha256."""
    pins = load_pins(PINS_FILE)
    assert pins == dict(pinned_sha256())
    for name, digest in pins.items():
        wheel = parse_wheel_url(name)
        assert wheel is not None and re.fullmatch(r"[0-9a-f]{64}", digest), name
        release = next(r for r in RELEASES if r.version == wheel.version)
        assert wheel.torch_minor in release.torch_minors, name


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ([], "expected an object"),
        ({"flash_attn-2.7.4.post1.tar.gz": DIGEST}, "not a release wheel file name"),
        ({IMAGE_WHEEL: "AB" * 32}, "not 64 lowercase hex"),
        ({IMAGE_WHEEL: "ab" * 31}, "not 64 lowercase hex"),
        ({IMAGE_WHEEL: None}, "not 64 lowercase hex"),
    ],
)
def test_malformed_pin_tables_are_errors(tmp_path, table, says):
    path = tmp_path / "pins.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=says):
        load_pins(path)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (f"https://h/v/{IMAGE_WHEEL}?X-Amz-Signature=abc", IMAGE_WHEEL),
        (f"https://h/v/{IMAGE_WHEEL}#sha256=abc", IMAGE_WHEEL),
        (f"https://h/v/{IMAGE_WHEEL.replace('+', '%2B')}", IMAGE_WHEEL),
        (f"/wheels/{IMAGE_WHEEL}", IMAGE_WHEEL),
    ],
)
def test_wheel_file_name_ignores_query_and_fragment(url, name):
    assert wheel_file_name(url) == name
    assert parse_wheel_url(url).name == name


GOOD_URL = f"https://mirror.example/wheels/{IMAGE_WHEEL}"


@pytest.mark.parametrize(
    ("env", "var", "says"),
    [
        ({"FLASH_ATTN_WHEEL_URL": GOOD_URL}, "FLASH_ATTN_WHEEL_SHA256", "required"),
        (
            {"FLASH_ATTN_WHEEL_URL": GOOD_URL, "FLASH_ATTN_WHEEL_SHA256": "abc"},
            "FLASH_ATTN_WHEEL_SHA256",
            "64 hex",
        ),
        ({"FLASH_ATTN_WHEEL_SHA256": "z" * 64}, "FLASH_ATTN_WHEEL_SHA256", "64 hex"),
        (
            {
                "FLASH_ATTN_WHEEL_URL": GOOD_URL.replace("https", "http"),
                "FLASH_ATTN_WHEEL_SHA256": DIGEST,
            },
            "FLASH_ATTN_WHEEL_URL",
            "https",
        ),
        (
            {
                "FLASH_ATTN_WHEEL_URL": "https://h/flash_attn-2.7.4.post1.tar.gz",
                "FLASH_ATTN_WHEEL_SHA256": DIGEST,
            },
            "FLASH_ATTN_WHEEL_URL",
            ".whl",
        ),
        (
            {"FLASH_ATTN_WHEEL_URL": "https:///x.whl", "FLASH_ATTN_WHEEL_SHA256": DIGEST},
            "FLASH_ATTN_WHEEL_URL",
            "https",
        ),
    ],
)
def test_wheel_settings_are_config_errors_naming_the_variable(env, var, says):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FLASH_ATTN": "off", **env})
    assert info.value.code == "CONFIG_ERROR"
    assert var in info.value.message and says in info.value.message


def test_wheel_settings_accepted_and_normalised():
    s = Settings.from_env(
        {"FLASH_ATTN_WHEEL_URL": GOOD_URL, "FLASH_ATTN_WHEEL_SHA256": f" {DIGEST.upper()} "}
    )
    assert (s.flash_attn_wheel_url, s.flash_attn_wheel_sha256) == (GOOD_URL, DIGEST)
    assert Settings.from_env({}).flash_attn_wheel_sha256 is None


def test_config_error_for_a_signed_url_does_not_echo_its_signature():
    signed = "http://h/x.whl?X-Amz-Signature=s3cr3tsig"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FLASH_ATTN_WHEEL_URL": signed, "FLASH_ATTN_WHEEL_SHA256": DIGEST})
    assert "s3cr3tsig" not in info.value.message and "http://h/x.whl" in info.value.message


def test_the_image_build_copies_what_the_bake_step_imports():
    """The Dockerfile copies only a few files before `--bake`; each module flash_attn imports
    from this repo (and what those import in turn), and the pin table, must be among them."""
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    bake_at = dockerfile.index("python -m f5worker.startup.flash_attn_bake")
    copied = set()
    for line in dockerfile[:bake_at].splitlines():
        if line.startswith("COPY "):
            sources, dest = line.split()[1:-1], line.split()[-1]
            copied |= {f"{dest.rstrip('/')}/{src.rsplit('/', 1)[-1]}" for src in sources}
    ours, todo = set(), ["f5worker/startup/flash_attn_bake.py"]
    while todo:
        module = todo.pop()
        ours.add(module)
        tree = ast.parse((REPO / module).read_text())
        todo += {
            node.module.replace(".", "/") + ".py"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("f5worker")
        } - ours
    needed = ours | {f"f5worker/startup/{PINS_FILE.name}"}
    assert needed <= copied, needed - copied
    assert '--sha256 "${FLASH_ATTN_BAKE_SHA256}"' in dockerfile
    assert f"--record {RECORD}" in dockerfile
    assert flash_attn_bake.BAKE_SHA_VAR == "FLASH_ATTN_BAKE_SHA256"


def _pin_script():
    spec = importlib.util.spec_from_file_location(
        "pin_flash_attn_wheels", REPO / "scripts" / "pin_flash_attn_wheels.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pin_script_lists_what_the_selection_picks_and_never_changes_a_pin(tmp_path):
    script = _pin_script()
    urls = script.selectable_urls("linux_x86_64")
    assert select_wheel(build("2.4.0+cu124", "12.4"), pins={}).url in urls
    assert all(parse_wheel_url(url) is not None for url in urls)
    assert len(urls) == len(set(urls))
    wheel = tmp_path / IMAGE_WHEEL
    wheel.write_bytes(b"stand-in bytes")
    name, digest = script.pin(str(wheel))
    assert (name, digest) == (IMAGE_WHEEL, hashlib.sha256(b"stand-in bytes").hexdigest())
    assert script.merge({}, {name: digest}) == {name: digest}
    with pytest.raises(ValueError, match="refusing to change existing pins"):
        script.merge({name: DIGEST}, {name: digest})
    with pytest.raises(ValueError, match="not a flash-attn release wheel"):
        script.pin(str(tmp_path / "flash_attn-2.7.4.post1.tar.gz"))


def test_pin_script_pins_what_an_image_label_or_log_names(capsys):
    """NAME=SHA256, as `org.f5worker.flash-attn.{wheel,sha256}` or the diag lines give them."""
    script = _pin_script()
    assert script.pin(f"{IMAGE_WHEEL}={DIGEST.upper()}") == (IMAGE_WHEEL, DIGEST)
    with pytest.raises(ValueError, match="not a sha256"):
        script.pin(f"{IMAGE_WHEEL}=abc")
    with pytest.raises(ValueError, match="not a flash-attn release wheel"):
        script.pin(f"flash_attn-2.7.4.post1.tar.gz={DIGEST}")
    assert script.main([f"{IMAGE_WHEEL}={DIGEST}"]) == 0
    assert capsys.readouterr().out == f'  "{IMAGE_WHEEL}": "{DIGEST}",\n'
    doc = (REPO / "scripts" / "pin_flash_attn_wheels.py").read_text()
    assert "org.f5worker.flash-attn.sha256" in doc and "diag.flash_attn.wheel_sha256" in doc
