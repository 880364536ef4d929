"""Rules whose arguments list every partition's files run their stage through workflow/scripts/stage.py: a shell
command is one argument to bash, which Linux caps at 128 KiB, and a pool of thousands of partitions exceeds it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from curate_fixtures import POOL, write_shards

from vlalign.store.tables import write_table

REPO = Path(__file__).resolve().parents[1]
# What Snakemake puts before a script: the `snakemake` object, here with only what stage.py reads.
PREAMBLE = """
import sys, types
snakemake = types.SimpleNamespace(log=[sys.argv[1]], params=types.SimpleNamespace(argv=open(sys.argv[2]).read().split("\\n")))
"""


def run_script(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """stage.py run as Snakemake runs it: a file of its own, executed by python."""
    script = folder / "stage_script.py"
    script.write_text(PREAMBLE + (REPO / "workflow" / "scripts" / "stage.py").read_text())
    (folder / "argv").write_text("\n".join(argv))
    return subprocess.run([sys.executable, str(script), str(folder / "log"), str(folder / "argv")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


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
    done = run_script(tmp_path, argv)
    assert done.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert pd.read_parquet(tmp_path / "pool.parquet")["key"].tolist() == [f"k{p}" for p in range(2000)]
    assert done.stdout == "" and '"partitions": 2000' in (tmp_path / "log").read_text()  # all of it in the log


def test_a_stage_whose_workers_are_spawned_runs_once(tmp_path):
    """Measuring starts its image workers by spawn, which runs the script file again in each worker: only the
    parent may run the stage (found by the SLURM test, where every worker ran it again and failed)."""
    shards = write_shards(tmp_path / "pool", POOL, "web")
    settings = {"measure": {"workers": 2, "ocr": "off"}, "experiment": "t",
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "results_dir": str(tmp_path)}  # fmt: skip
    done = run_script(tmp_path, ["measure-samples", "--settings", json.dumps(settings), "--source", "web",
                                 "--partition", "0000", "--inputs", str(shards), "--out",
                                 str(tmp_path / "measured.parquet")])  # fmt: skip
    assert done.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert len(pd.read_parquet(tmp_path / "measured.parquet")) == len(POOL)
