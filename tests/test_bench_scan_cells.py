"""bench/bench_scan_cells.py runs end to end (a smoke run at a tiny size; it validates each cell against its twin,
times things and asserts nothing about speed, and neither does this test)."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_scan_cells.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="not a source checkout")
def test_bench_scan_cells_prints_its_table():
    process = subprocess.run([sys.executable, str(SCRIPT), "--batch", "2", "--hidden", "16", "--steps", "5",
                              "--repeats-seconds", "0.01", "--no-torch"], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    assert "validated N=2 H=16: indrnn" in process.stderr
    rows = [line for line in process.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| N | H | model | median ms | GFLOP/s | time / our GRU | flops / our GRU |")
    models = [row.split(" | ")[2] for row in rows[1:]]
    assert models == ["rnnext lstm", "rnnext gru", "rnnext indrnn", "rnnext mingru", "rnnext minlstm", "rnnext sru",
                      "rnnext qrnn"]
    flop_ratios = [row.split(" | ")[6] for row in rows[1:]]  # 4H(I+H), 3H(I+H), IH, 2IH, 3IH, 3IH, 6IH at I = H
    assert flop_ratios == ["1.333", "1.000", "0.167", "0.333", "0.500", "0.500", "1.000"]
