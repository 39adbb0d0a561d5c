"""`tandem bench model` end to end on a tiny random Llama (the table and the bound line print, the
plain-MLX anchor is built from the same weights)."""

import re
import subprocess
import sys


def test_bench_model_runs_on_a_tiny_model():
    cmd = [sys.executable, "-m", "mlx_tandem.cli", "bench", "model", "--layers", "2", "--hidden", "256",
           "--intermediate", "512", "--heads", "4", "--kv-heads", "2", "--vocab", "1000", "--context", "8",
           "--decode-tokens", "2", "--prompt", "8", "--repeats", "1", "--anchors", "bf16",
           "--anchor-repeats", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [l for l in out.stdout.splitlines() if l.startswith("| FP8") or l.startswith("| MLX bf16")]
    assert len(rows) == 2, out.stdout
    for row in rows:
        decode = float(row.split("|")[3])
        assert decode > 0
    assert re.search(r"bandwidth bound for FP8 decode: [\d.]+ tokens/s", out.stdout)
