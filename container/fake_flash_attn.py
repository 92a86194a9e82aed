"""Stand-in flash-attn wheels for tests: release-style names, no CUDA inside.

A pure-python `flash_attn` whose `flash_attn_2_cuda` either imports or raises the undefined-symbol
ImportError that a wheel built for another torch / C++ ABI raises. With F5_TTS_IMPORTS it also
offers the names f5-tts imports whenever flash_attn is installed, so an image that bakes it still
runs (on torch attention). Used by tests/integration/test_flash_attn_install.py and
scripts/container_test.py.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

NEW_ABI_SYMBOL = (
    "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
)
GOOD_KERNEL = "def fwd():\n    return 'ok'\n"
BROKEN_KERNEL = (
    "raise ImportError('/usr/local/lib/python3.11/dist-packages/flash_attn_2_cuda.cpython-311-"
    f"x86_64-linux-gnu.so: undefined symbol: {NEW_ABI_SYMBOL}')\n"
)


# The names f5-tts imports from flash_attn whenever the package is present; a stand-in wheel for
# an image must provide them (they are never called on the torch-attention path).
F5_TTS_IMPORTS = {
    "flash_attn/interface.py": "def flash_attn_func(*a, **k):\n    raise NotImplementedError\n"
    "flash_attn_varlen_func = flash_attn_func\n",
    "flash_attn/bert_padding.py": "def pad_input(*a, **k):\n    raise NotImplementedError\n"
    "unpad_input = pad_input\n",
}


def make_wheel(
    path: Path, kernel: str, version: str = "2.7.4.post1", extra: dict[str, str] | None = None
) -> Path:
    """A minimal valid wheel; like the real ones, its metadata version has no local part."""
    dist = f"flash_attn-{version}.dist-info"
    init = f"__version__ = {version!r}\nimport flash_attn_2_cuda  # noqa\n"
    if extra and "flash_attn/interface.py" in extra:
        init += "from flash_attn.interface import flash_attn_func, flash_attn_varlen_func  # noqa\n"
    files = {
        **(extra or {}),
        "flash_attn/__init__.py": init,
        "flash_attn_2_cuda.py": kernel,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: flash_attn\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
        "Tag: cp311-cp311-linux_x86_64\n",
        f"{dist}/top_level.txt": "flash_attn\nflash_attn_2_cuda\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
            whl.writestr(name, data)
        record.append(f"{dist}/RECORD,,")
        whl.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return path
