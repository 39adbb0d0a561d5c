"""`tandem bench serve` runs end to end on the demo model (tiny settings) and prints its table."""

import os
import subprocess
import sys

import pytest

from mlx_tandem import demo_model


@pytest.mark.parametrize("modes", ["single", "pipeline"])
def test_bench_serve_prints_a_table(modes):
    try:
        demo_model.demo_gguf_path()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    out = subprocess.run([sys.executable, "-m", "mlx_tandem", "bench", "serve", "--models", "demo", "--modes", modes,
                          "--concurrency", "1,3", "--tokens", "12", "--prompt-tokens", "8", "--rounds", "1",
                          "--anchor-requests", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [l for l in out.stdout.splitlines() if l.startswith(f"| demo | {modes}")]
    assert [r.split("|")[3].strip() for r in rows] == ["sequential (anchor)", "1", "3"]
    assert all(float(r.split("|")[4]) > 0 for r in rows)
    assert "generate_step (no server)" in out.stdout
