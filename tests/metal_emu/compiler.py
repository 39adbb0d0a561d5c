"""Turns .metal sources into a shared library: preprocess with the shim, rewrite, generate
launchers, compile with g++ and link with the runtime. Libraries are cached by a hash of
everything that goes into them (preprocessed sources, so every #include; defines; shim;
runtime; front end; compiler and flags)."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import codegen, frontend
from .errors import CompileError

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim"
RUNTIME = HERE / "runtime"
CXX = os.environ.get("METAL_EMU_CXX", "g++")
# Metal's own predefined macros, so sources take their Metal branches.
PREDEFINED = {"__METAL__": "1", "__METAL_VERSION__": "310", "__HAVE_BFLOAT__": "1", "METAL_EMU": "1"}
JOBS = int(os.environ.get("METAL_EMU_JOBS", 0)) or min(2, os.cpu_count() or 1)
KERNELS_PER_OBJECT = 12  # a unit with more instantiations is split into objects compiled in parallel
CXXFLAGS = ["-std=c++20", "-O2", "-g", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-fwrapv",
            "-fsigned-char", "-fstack-clash-protection", "-Wno-attributes", "-Wno-unknown-pragmas", "-Wno-ignored-attributes"]


def cache_dir() -> Path:
    env = os.environ.get("METAL_EMU_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlx_tandem_metal_emu"


def _run(cmd: list[str], what: str) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise CompileError(f"{what}: cannot run {cmd[0]} ({e}); the emulator needs a C++20 compiler") from None
    if r.returncode != 0:
        lines = [ln if len(ln) < 300 else ln[:300] + " ..." for ln in r.stderr.splitlines()]
        errs = [ln for ln in lines if "error" in ln]
        msg = "\n".join((errs[:12] + ["..."] + lines[:80]) if errs else lines[:80])
        raise CompileError(f"{what} failed:\n{msg}")
    return r.stdout


def _tree_hash(h, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())


def _toolchain_hash() -> str:
    h = hashlib.sha256()
    h.update(_run([CXX, "--version"], "compiler version").encode())
    h.update(" ".join(CXXFLAGS).encode())
    _tree_hash(h, SHIM)
    _tree_hash(h, RUNTIME)
    for name in ("frontend.py", "codegen.py", "compiler.py"):
        h.update((HERE / name).read_bytes())
    return h.hexdigest()[:20]


def preprocess(src: Path, include_dirs: list[Path], defines: dict[str, object], cxx: str | None = None) -> str:
    cmd = [cxx or CXX, "-E", "-x", "c++", "-std=c++20", "-isystem", str(SHIM)]
    for d in include_dirs:
        cmd += ["-I", str(d)]
    for k, v in {**PREDEFINED, **defines}.items():
        cmd.append(f"-D{k}" if v is None or v is True else f"-D{k}={v}")
    cmd.append(str(src))
    return _run(cmd, f"preprocessing {src}")


RUNTIME_SOURCES = ("registry.cpp", "lane_errors.cpp", "fibers.cpp", "scheduler.cpp")


def _runtime_objects(tool_hash: str) -> list[Path]:
    """The runtime's objects, compiled once per toolchain/shim/runtime version."""
    objs = []
    for name in RUNTIME_SOURCES:
        obj = cache_dir() / f"runtime-{tool_hash}-{Path(name).stem}.o"
        if not obj.exists():
            obj.parent.mkdir(parents=True, exist_ok=True)
            tmp = obj.with_suffix(f".{os.getpid()}.tmp.o")
            _run([CXX, *CXXFLAGS, "-isystem", str(SHIM), "-I", str(RUNTIME), "-c", str(RUNTIME / name), "-o", str(tmp)],
                 f"compiling the emulator runtime ({name})")
            os.replace(tmp, obj)
        objs.append(obj)
    return objs


def build(sources: list[Path], include_dirs: list[Path], defines: dict[str, object]) -> Path:
    """Path of the compiled library for these sources (built on first use, then cached)."""
    tool_hash = _toolchain_hash()
    runtime = _runtime_objects(tool_hash)
    texts = [preprocess(s, include_dirs, defines) for s in sources]
    h = hashlib.sha256(tool_hash.encode())
    for s, t in zip(sources, texts):
        h.update(str(s).encode())
        h.update(t.encode())
    h.update(repr(sorted((k, str(v)) for k, v in defines.items())).encode())
    key = h.hexdigest()[:24]
    final = cache_dir() / key
    lib = final / "kernels.so"
    if lib.exists():
        return lib
    units = [frontend.rewrite(t) for t in texts]
    if not any(u.kernels for u in units):
        raise CompileError(f"no [[kernel]] functions found in {', '.join(map(str, sources))}")
    seen: dict[str, Path] = {}
    for src, unit in zip(sources, units):
        for host, _, k in codegen.entries(unit):
            if host in seen:
                raise CompileError(f"{k.file}:{k.line}: kernel name '{host}' is defined twice ({seen[host]}, {src})")
            seen[host] = src
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache_dir()))
    try:
        jobs = []
        for n, (src, unit) in enumerate(zip(sources, units)):
            parts = max(1, min(JOBS, -(-len(codegen.entries(unit)) // KERNELS_PER_OBJECT)))
            for part in range(parts):
                cpp = work / f"unit{n}_{part}.cpp"
                cpp.write_text(unit.text + codegen.launcher(unit, part, parts))
                jobs.append(([CXX, *CXXFLAGS, "-isystem", str(SHIM), "-c", str(cpp), "-o", str(cpp.with_suffix(".o"))],
                             f"compiling {src}"))
        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            list(pool.map(lambda job: _run(*job), jobs))
        objs = [job[0][-1] for job in jobs]
        # Objects split from one unit (and units sharing a header) define the same non-template
        # functions; the copies are identical, so the linker may keep any one.
        dup = ["-Wl,--allow-multiple-definition"] if platform.system() == "Linux" else []
        _run([CXX, "-shared", "-o", str(work / "kernels.so"), *objs, *map(str, runtime), *dup,
              "-lpthread", "-lm"], "linking")
        try:
            os.rename(work, final)
        except OSError:  # another process built the same library first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return lib
