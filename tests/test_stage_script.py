"""Rules whose arguments list every partition's files run their stage through workflow/scripts/stage.py: a shell
command is one argument to bash, which Linux caps at 128 KiB, and a pool of thousands of partitions exceeds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from vlalign.store.tables import write_table

REPO = Path(__file__).resolve().parents[1]
# What Snakemake puts before a script: the `snakemake` object, here with only what stage.py reads.
PREAMBLE = """
import sys, types
snakemake = types.SimpleNamespace(log=[sys.argv[1]], params=types.SimpleNamespace(argv=open(sys.argv[2]).read().split("\\n")))
"""


def test_a_command_line_longer_than_bash_takes_runs_and_logs(tmp_path):
    tables = []
    for p in range(2000):  # 2,000 partitions with long names: ~250 KiB of arguments
        table = tmp_path / "beton" / "pool" / ("a-source-with-a-rather-long-name-" * 2) / f"part-{p:04d}.parquet"
        table.parent.mkdir(parents=True, exist_ok=True)
        write_table([{"row": 0, "key": f"k{p}", "caption": "c", "source": "s", "category": None, "meta_json": "{}"}],
                    table, table.with_suffix(".beton"))  # fmt: skip
        tables.append(str(table))
    argv = ["gather-tables", "--tables", *tables, "--out", str(tmp_path / "pool.parquet")]
    assert len(" ".join(argv)) > 128 * 1024
    (tmp_path / "argv").write_text("\n".join(argv))
    script = PREAMBLE + (REPO / "workflow" / "scripts" / "stage.py").read_text()
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "log"), str(tmp_path / "argv")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert pd.read_parquet(tmp_path / "pool.parquet")["key"].tolist() == [f"k{p}" for p in range(2000)]
    assert done.stdout == "" and "partitions\": 2000" in (tmp_path / "log").read_text()  # all of it in the log
