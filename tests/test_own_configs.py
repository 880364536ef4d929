"""A config of one's own stands alone: `--configfile` plans exactly its jobs, in its own experiment folder; the
real-data configs under config/ dry-run clean once the files they name exist (stand-ins made here)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_workflow import REPO, job_counts, snakemake
from vlalign.config import run_instances, validate_config

REAL_CONFIGS = sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name not in ("config.yaml", "ablation.yaml"))
DEMO_SOURCES = ("tuxpaint", "openclipart", "fashion_mnist", "shapes")


def write_stand_ins(config: dict, root: Path) -> None:
    """Tiny files at every local path the config's sources name, in the layout each source type reads."""
    for name, source in config["sources"].items():
        kind = source["type"]
        if kind == "url_list":
            path = root / source["path"].replace("*", "0")  # a glob's stand-in: one shard it matches
            path.parent.mkdir(parents=True, exist_ok=True)
            columns = {source.get("url_col", "url"): [f"http://127.0.0.1:9/{name}/{i}.jpg" for i in range(3)],
                       source.get("caption_col", "caption"): [f"a photo number {i}" for i in range(3)],
                       "uid": [f"{name}{i:04d}" for i in range(3)]}  # fmt: skip
            table = pd.DataFrame(columns)
            if path.suffix == ".parquet":
                table.to_parquet(path, index=False)
            else:
                table.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
        elif kind == "webdataset":
            for pattern in source["urls"]:
                shard = root / pattern.replace("*", "0")
                shard.parent.mkdir(parents=True, exist_ok=True)
                tarfile.open(shard, "w").close()
            if source.get("classnames"):
                (root / source["classnames"]).write_text("cat\ndog\n")
        elif kind == "winoground":
            data = root / source["path"] / "data"
            (data / "images").mkdir(parents=True)
            example = {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "a dog on a cat",
                       "caption_1": "a cat on a dog", "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
                       "collapsed_tag": "Object"}  # fmt: skip
            (data / "examples.jsonl").write_text(json.dumps(example) + "\n")
        else:
            raise AssertionError(f"{name}: no stand-in for source type {kind}")


def planned_outputs(dry_run_output: str) -> list[str]:
    return [path for line in dry_run_output.splitlines() if line.strip().startswith("output:")
            for path in line.split(":", 1)[1].strip().split(", ")]  # fmt: skip


@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_data_config_dry_runs_clean_in_its_own_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs name their files relative to where Snakemake runs
    path = REPO / "config" / name
    config = yaml.safe_load(path.read_text())
    write_stand_ins(config, tmp_path)
    result = snakemake("-n", "-p", "--configfile", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    full = validate_config(config, name=path.stem)
    experiment = full["experiment"]
    assert experiment == path.stem
    counts = job_counts(result.stdout)
    assert counts["download"] == sum(full["sources"][s]["partitions"] for s in config["sources"])
    assert counts["index_urls"] == sum(s["type"] == "url_list" for s in config["sources"].values())
    assert counts["train"] == counts["evaluate"] == len(run_instances(full))
    assert counts["select"] == len(full["curate"]["pools"])
    outputs = planned_outputs(result.stdout)
    assert outputs and all(p.startswith(f"results/{experiment}/") for p in outputs), outputs[:5]
    assert not any(source in result.stdout for source in DEMO_SOURCES)
    # Their hub weights are fetched once, on the submit host, before any embed job.
    assert counts["fetch_encoder"] == len({full["image_encoder"], full["text_encoder"]})
    # Every run trains on the pool's embeddings of the two towers the config names.
    towers = {full["image_encoder"], full["text_encoder"]}
    embedded = {re.search(r"embeddings/pool/(\w+)", p).group(1) for p in outputs if "/embeddings/pool/" in p}
    assert embedded == towers


def minimal_config(tmp_path: Path) -> Path:
    """One URL list with a held-out split, the packaged towers, one run: what a new user writes first."""
    pd.DataFrame({"url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(4)],
                  "caption": [f"caption {i}" for i in range(4)]}).to_parquet(tmp_path / "urls.parquet")  # fmt: skip
    config = {
        "sources": {"web": {"type": "url_list", "path": "urls.parquet", "eval_fraction": 0.25}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "evaluate": {"retrieval": ["web"]},
    }
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_own_config_plans_exactly_its_own_jobs_and_leaves_the_demo_alone(tmp_path):
    path = minimal_config(tmp_path)
    # The demo's config sits where Snakemake would read it without --configfile: nothing of it may leak in.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    result = snakemake("-n", "-p", "--configfile", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # pool and eval split of one source; two towers on each; the schema's one pool and one run.
    assert job_counts(result.stdout) == {"index_urls": 1, "download": 1, "measure_samples": 1, "measure": 1,
                                         "select": 1, "curated_shards": 1, "convert": 1, "convert_partition": 1,
                                         "gather_pool_table": 1, "embed": 4, "train": 1, "evaluate": 1, "report": 1,
                                         "all": 1, "total": 17}  # fmt: skip
    outputs = planned_outputs(result.stdout)
    assert all(p.startswith("results/my/") for p in outputs), outputs
    assert not any(source in result.stdout for source in DEMO_SOURCES)

    # Without --configfile the same folder plans the demo, in its own experiment folder beside `my`.
    demo = snakemake("-n", "-p", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert job_counts(demo.stdout)["total"] == 85
    assert all(p.startswith("results/demo/") for p in planned_outputs(demo.stdout))


def test_experiment_and_towers_default_from_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(minimal_config(tmp_path).read_text())
    full = validate_config(config, name="my")
    assert (full["experiment"], full["image_encoder"], full["text_encoder"]) == ("my", "lite0", "minilm")
    assert full["curate"]["sources"] == ["web"] and full["deb_cache"] == "results/debs"
    config["encoders"]["lite1"] = {"spec": "efficientnet-lite1"}
    with pytest.raises(ValueError, match=r"image_encoder: name the image tower.*lite0, lite1"):
        validate_config(config)
