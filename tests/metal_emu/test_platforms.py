"""The fiber code on aarch64: the runtime and three kernel units are cross-compiled with a C driver
(runtime/selftest.cpp) and run under qemu-user. Skipped where the cross tools are not installed
(Debian: g++-aarch64-linux-gnu qemu-user); the binary is cached like the libraries."""
import hashlib
import shutil
import subprocess

import pytest

from metal_emu import codegen, compiler, frontend
from metal_emu.conftest import KERNELS

CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"


@pytest.mark.skipif(not (shutil.which(CROSS) and shutil.which(QEMU)), reason=f"needs {CROSS} and {QEMU}")
def test_aarch64_fibers_barriers_collectives_and_faults_under_qemu(tmp_path):
    units = []
    for name in ("reduce.metal", "collectives.metal", "broken.metal"):
        unit = frontend.rewrite(compiler.preprocess(KERNELS / name, [], {}, cxx=CROSS))
        units.append(unit.text + codegen.launcher(unit))
    selftest = compiler.RUNTIME / "selftest.cpp"
    key = hashlib.sha256("".join(units).encode() + selftest.read_bytes() + compiler._toolchain_hash().encode())
    exe = compiler.cache_dir() / f"selftest-aarch64-{key.hexdigest()[:20]}"
    if not exe.exists():
        flags = [f for f in compiler.CXXFLAGS if f not in ("-fPIC", "-fvisibility=hidden", "-g")]
        srcs = []
        for n, text in enumerate(units):
            srcs.append(tmp_path / f"unit{n}.cpp")
            srcs[-1].write_text(text)
        cmd = [CROSS, *flags, "-isystem", str(compiler.SHIM), "-I", str(compiler.RUNTIME), *map(str, srcs),
               *(str(compiler.RUNTIME / n) for n in compiler.RUNTIME_SOURCES), str(selftest), "-static", "-pthread",
               "-o", str(tmp_path / "t")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        compiler.cache_dir().mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp_path / "t"), exe)
    r = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout + r.stderr
