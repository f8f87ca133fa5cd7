"""bench/bench_models.py runs end to end (a smoke run: tiny batches; it times things and asserts nothing about
speed, and neither does this test)."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_models.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="not a source checkout")
def test_bench_models_quick_prints_its_table(tmp_path):
    out = tmp_path / "report.md"
    process = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workloads", "imdb", "--markdown-out",
                              str(out)], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    table = out.read_text()
    assert table == process.stdout
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| workload | ") and "rnnext default/1t" in rows[0]
    assert rows[1].startswith("| IMDB course model") and rows[2].startswith("| char-LM generation")
