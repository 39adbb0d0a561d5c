"""The AVX-512 kernels have no native host here (the development machines are AVX2-only): build
them over SIMDe's portable AVX-512 (tests/native/simde_avx512.h, forced in with -include) and
cross-check them against the scalar kernels: fused attention over drawn problems (every head-dim
pair, GQA groups up to one 16-row vector, decode/chunk/prefill, cache views with a poisoned tail)
and the FP8 matmul over ragged shapes and block sizes. The check programs run under
AddressSanitizer, so a read or write past any buffer fails the test (the AVX2 attention path is
checked the same way). Skipped without AVX2 or SIMDe (Debian: libsimde-dev; .ci/run
installs it)."""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

import mlx_tandem as tdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
NATIVE = os.path.join(ROOT, "tests", "native")
CXX = "g++"
SIMDE = "/usr/include/simde/x86/avx512.h"
FLAGS = ["-std=c++17", "-O1", "-Wno-psabi", "-DTANDEM_X86=1", f"-I{CSRC}", "-mavx2", "-mfma", "-mf16c", "-pthread"]
ASAN = ["-fsanitize=address"]
# Only linked for the dispatcher, not checked here (the Python tests run it); under
# AddressSanitizer GCC 12 takes ~6 minutes on it.
UNCHECKED = {"fp8_matmul_avx2.cpp"}

# SIMDe's AVX-512 is written over the host's AVX2 (as are the other units, built with -mavx2).
pytestmark = pytest.mark.skipif(
    tdm.cpu_detected_isa() not in ("avx2", "avx512") or not shutil.which(CXX) or not os.path.exists(SIMDE),
    reason=f"needs an AVX2 host, {CXX} and SIMDe ({SIMDE})")


def cpu(name):
    return os.path.join(CSRC, "cpu", name)


def compile_one(args):
    out = subprocess.run([CXX, *FLAGS, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def build(tmp, name, main, avx512_source, others):
    """Links tests/native/<main> with cpu/<avx512_source> compiled over SIMDe and the other
    sources as they are; two compilers at a time (the SIMDe unit is the slow one)."""
    units = [(cpu(avx512_source), [*ASAN, "-include", os.path.join(NATIVE, "simde_avx512.h")])]
    units += [(os.path.join(NATIVE, main), ASAN)] + [(cpu(f), [] if f in UNCHECKED else ASAN) for f in others]
    objs = [str(tmp / f"{name}.{i}.o") for i in range(len(units))]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(compile_one, [[*extra, "-c", src, "-o", o] for (src, extra), o in zip(units, objs)]))
    exe = str(tmp / name)
    compile_one([*ASAN, *objs, "-o", exe])
    return exe


def run(exe, *args):
    out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "TANDEM_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_attention_avx512_matches_scalar(tmp_path):
    exe = build(tmp_path, "attention_check", "attention_check.cpp", "attention_avx512.cpp",
                ["attention_scalar.cpp", "attention_avx2.cpp", "isa.cpp", "thread_pool.cpp"])
    for isa in ("avx512", "avx2"):
        out = run(exe, isa, "300")
        assert out.startswith("ok 300 ") and f"isa={isa}" in out, out


def test_fp8_matmul_avx512_matches_scalar(tmp_path):
    exe = build(tmp_path, "fp8_matmul_check", "fp8_matmul_check.cpp", "fp8_matmul_avx512.cpp",
                ["fp8_matmul_scalar.cpp", "fp8_matmul_avx2.cpp", "gather_fp8_matmul.cpp", "isa.cpp",
                 "thread_pool.cpp"])
    out = run(exe, "avx512")
    assert out.startswith("ok ") and "isa=avx512" in out, out
