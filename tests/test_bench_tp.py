"""`tandem bench tp` end to end on a tiny model: both rows, the ratio and the collective columns."""

import subprocess
import sys


def test_bench_tp_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mlx_tandem", "bench", "tp", "--models", "tiny", "--tokens", "4",
                          "--repeats", "1", "--pings", "20", "--context", "8", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 2
    tp = [c.strip() for c in rows[1].split("|")]
    assert tp[2].startswith("TP 2 ranks") and float(tp[4].strip("*")) > 0
    assert float(tp[5]) == 5.0  # 2 layers x (attention + MLP) + the head's gather per token
