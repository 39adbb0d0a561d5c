"""Deliberately broken kernels must raise the right error, naming the kernel and the line."""
import numpy as np
import pytest

import metal_emu
from metal_emu.conftest import KERNELS

SOURCE = KERNELS / "broken.metal"


def bug_line(tag: str) -> str:
    """'broken.metal:N' for the line marked `// BUG: tag`."""
    for n, line in enumerate(SOURCE.read_text().splitlines(), 1):
        if f"BUG: {tag}" in line:
            return f"broken.metal:{n}"
    raise AssertionError(tag)


def f32(n):
    return np.zeros(n, np.float32)


CASES = [
    ("barrier_in_branch", metal_emu.BarrierDivergence, dict(grid=(64,), threadgroup=(64,), buffers={0: f32(64)}),
     ["threads 0-15 wait at threadgroup_barrier", "threads 16-63 have exited"]),
    ("barrier_after_return", metal_emu.BarrierDivergence, dict(grid=(64,), threadgroup=(64,), buffers={0: f32(64)}),
     ["threads 40-63 have exited"]),
    ("simd_sum_diverged", metal_emu.BarrierDivergence, dict(grid=(32,), threadgroup=(32,), buffers={0: f32(32)}),
     ["SIMD-group divergence", "wait at simd_sum"]),
    ("read_past_end", metal_emu.OutOfBounds, dict(grid=(64,), threadgroup=(32,), buffers={0: f32(64), 1: f32(64)}),
     ["out-of-bounds read of 4 bytes at byte offset 256 of buffer 0 (size 256 bytes)", "thread (63,0,0)"]),
    ("write_past_end", metal_emu.OutOfBounds, dict(grid=(64,), threadgroup=(32,), buffers={0: f32(64)}),
     ["out-of-bounds write of 4 bytes at byte offset 256 of buffer 0"]),
    ("huge_threadgroup_array", metal_emu.LimitExceeded, dict(grid=(64,), threadgroup=(64,), buffers={0: f32(64)}),
     ["'big' (36000 bytes)", "32768"]),
    ("threadgroup_write_past_end", metal_emu.OutOfBounds, dict(grid=(33,), threadgroup=(33,), buffers={0: f32(33)}),
     ["threadgroup memory written out of bounds: 0 bytes past the end of 'tile' (128 bytes"]),
    ("simdgroup_load_past_end", metal_emu.OutOfBounds,
     dict(grid=(32,), threadgroup=(32,), buffers={0: f32(60), 1: f32(64)}), ["in simdgroup_load"]),
]


@pytest.mark.parametrize("kernel,error,launch,phrases", CASES, ids=[c[0] for c in CASES])
def test_broken_kernel_raises_with_kernel_name_and_line(broken, kernel, error, launch, phrases):
    with pytest.raises(error) as info:
        broken.dispatch(kernel, **launch)
    msg = str(info.value)
    assert f"kernel '{kernel}'" in msg
    assert bug_line(kernel) in msg
    for p in phrases:
        assert p in msg


def test_a_read_one_past_the_end_is_caught_even_when_it_is_the_only_bad_access(broken):
    # 63 lanes read in bounds; only thread 63 reads x[64]
    with pytest.raises(metal_emu.OutOfBounds, match="offset 256"):
        broken.dispatch("read_past_end", grid=(64,), threadgroup=(64,), buffers={0: f32(64), 1: f32(64)})
    broken.dispatch("read_past_end", grid=(63,), threadgroup=(64,), buffers={0: f32(64), 1: f32(63)})


def test_unbound_buffer_is_an_error_when_used(broken):
    with pytest.raises(metal_emu.OutOfBounds, match="write of 4 bytes: buffer 1 is not bound"):
        broken.dispatch("read_past_end", grid=(8,), threadgroup=(8,), buffers={0: f32(64)})


@pytest.mark.parametrize("tg", [(1025,), (32, 33), (8, 8, 17)])
def test_more_than_1024_threads_per_threadgroup(broken, tg):
    with pytest.raises(metal_emu.LimitExceeded, match="exceeds the limit of 1024"):
        broken.dispatch("capped", grid=(2048,), threadgroup=tg, buffers={0: f32(2048)})


def test_kernel_max_total_threads_attribute_is_enforced(broken):
    broken.dispatch("capped", grid=(128,), threadgroup=(64,), buffers={0: f32(128)})
    with pytest.raises(metal_emu.LimitExceeded, match=r"max_total_threads_per_threadgroup\(64\)"):
        broken.dispatch("capped", grid=(128,), threadgroup=(128,), buffers={0: f32(128)})


def test_threadgroup_memory_argument_limits(collectives):
    x = np.zeros(64, np.uint32)
    with pytest.raises(metal_emu.LimitExceeded, match="32768"):
        collectives.dispatch("block_scan", grid=(64,), threadgroup=(64,), buffers={0: x, 1: x.copy()},
                             threadgroup_memory={0: 32784})
    with pytest.raises(ValueError, match="multiple of 16"):
        collectives.dispatch("block_scan", grid=(64,), threadgroup=(64,), buffers={0: x, 1: x.copy()},
                             threadgroup_memory={0: 250})


def test_bad_arguments_are_value_errors(broken):
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        broken.dispatch("nope", grid=(1,), threadgroup=(1,))
    with pytest.raises(ValueError, match="mode"):
        broken.dispatch("capped", grid=(1,), threadgroup=(1,), mode="warps")
    with pytest.raises(ValueError, match="C-contiguous"):
        broken.dispatch("capped", grid=(1,), threadgroup=(1,), buffers={0: f32(8)[::2]})
    with pytest.raises(ValueError, match="buffer index"):
        broken.dispatch("capped", grid=(1,), threadgroup=(1,), buffers={40: f32(8)})


def test_stack_overflow_and_wild_pointers_become_exceptions_not_crashes(broken):
    with pytest.raises(metal_emu.LimitExceeded, match="kernel 'stack_overflow'.*lane stack overflow"):
        broken.dispatch("stack_overflow", grid=(4,), threadgroup=(4,),
                        buffers={0: f32(4), 1: np.array([60000], np.uint32)})
    with pytest.raises(metal_emu.OutOfBounds, match="invalid memory access") as info:
        broken.dispatch("wild_threadgroup_pointer", grid=(4,), threadgroup=(4,), threadgroup_memory={0: 64},
                        buffers={0: f32(4), 1: np.array([1 << 45], np.uint64)})
    assert bug_line("wild_threadgroup_pointer") in str(info.value)
    x, y = np.arange(9, dtype=np.float32), f32(8)  # the process and the library are still usable
    broken.dispatch("read_past_end", grid=(8,), threadgroup=(8,), buffers={0: x, 1: y})
    np.testing.assert_array_equal(y, x[1:])


def test_threadgroup_memory_argument_too_small_is_caught(collectives):
    x = np.arange(64, dtype=np.uint32)
    with pytest.raises(metal_emu.OutOfBounds, match=r"past the end of 'threadgroup\(0\)' \(128 bytes"):
        collectives.dispatch("block_scan", grid=(64,), threadgroup=(64,), buffers={0: x, 1: x.copy()},
                             threadgroup_memory={0: 128})


def test_reverse_order_exposes_a_missing_barrier(broken):
    x = np.arange(64, dtype=np.float32)
    expect = np.concatenate([x[:32], x[:32]])
    out = f32(64)
    broken.dispatch("missing_barrier", grid=(64,), threadgroup=(64,), buffers={0: x, 1: out})
    np.testing.assert_array_equal(out, expect)  # first-to-last order hides the bug
    broken.dispatch("missing_barrier", grid=(64,), threadgroup=(64,), buffers={0: x, 1: out}, order="reverse")
    assert np.isnan(out[32:]).all()  # last-to-first reads unwritten (poisoned) threadgroup memory
    np.testing.assert_array_equal(out[:32], x[:32])
