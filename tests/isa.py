"""The CPU kernel paths this machine can run, for parametrizing tests over TANDEM_ISA."""

import pytest

import mlx_tandem as tdm

_ORDER = ["scalar", "avx2", "avx512"]


def _supported(isa):
    best = tdm.cpu_detected_isa()
    if best == "neon":
        return isa in ("scalar", "neon")
    return best in _ORDER and _ORDER.index(isa) <= _ORDER.index(best)


ALL = _ORDER + (["neon"] if tdm.cpu_detected_isa() == "neon" else [])
PARAMS = [
    pytest.param(i, marks=pytest.mark.skipif(not _supported(i), reason=f"processor lacks {i}"))
    for i in ALL
]
