"""Fixtures for the emulator's own tests: the small kernels under kernels/, compiled once."""
from pathlib import Path

import pytest

import metal_emu

KERNELS = Path(__file__).resolve().parent / "kernels"


@pytest.fixture(autouse=True)
def _require_emulator():
    ok, why = metal_emu.available()
    if not ok:
        pytest.skip(why)


def _lib(name: str, **kw):
    return metal_emu.compile([KERNELS / name], **kw)


@pytest.fixture(scope="session")
def collectives():
    return _lib("collectives.metal")


@pytest.fixture(scope="session")
def reduce_lib():
    return _lib("reduce.metal")


@pytest.fixture(scope="session")
def matmul():
    return _lib("matmul.metal")


@pytest.fixture(scope="session")
def misc():
    return _lib("misc.metal")


@pytest.fixture(scope="session")
def broken():
    return _lib("broken.metal")


@pytest.fixture(scope="session")
def mlx_style():
    return metal_emu.compile([KERNELS / "mlx_style" / "gemv.metal"], include_dirs=[KERNELS / "mlx_style"])


@pytest.fixture(scope="session")
def shim_lib():
    return _lib("shim.metal")
