"""The NEON FP8 matmul path (Apple-silicon CPUs) has no native host here: build the kernels
for aarch64 and run a cross-check against the scalar kernel under qemu-user. Skipped where the
cross tools are not installed (Debian: g++-aarch64-linux-gnu qemu-user; .ci/run installs them)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
SOURCES = [os.path.join(ROOT, "tests", "native", "fp8_matmul_check.cpp")] + [
    os.path.join(CSRC, "cpu", f) for f in
    ("isa.cpp", "thread_pool.cpp", "fp8_matmul_scalar.cpp", "fp8_matmul_neon.cpp", "gather_fp8_matmul.cpp")
]
CXX, QEMU = "aarch64-linux-gnu-g++", "qemu-aarch64"


@pytest.mark.skipif(not (shutil.which(CXX) and shutil.which(QEMU)), reason=f"needs {CXX} and {QEMU}")
def test_neon_fp8_matmul_matches_scalar_under_qemu(tmp_path):
    exe = tmp_path / "fp8_matmul_check"
    subprocess.run([CXX, "-std=c++17", "-O2", "-static", "-pthread", "-DTANDEM_ARM=1", f"-I{CSRC}",
                    *SOURCES, "-o", str(exe)], check=True, capture_output=True, text=True)
    out = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TANDEM_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok ") and "isa=neon" in out.stdout, out.stdout
