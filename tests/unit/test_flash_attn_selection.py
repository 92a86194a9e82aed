"""flash-attn wheel selection, named the way flash-attn's own setup.py names its release wheels."""

import itertools

import pytest

from f5worker.startup.flash_attn import (
    BASE_WHEEL_URL,
    RELEASES,
    NoMatchingWheel,
    TorchBuild,
    demangle,
    explain_load_error,
    parse_wheel_url,
    select_wheel,
    wheel_name,
)


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
