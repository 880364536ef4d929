"""The planted source: counts and truth of each kind of planted noise, determinism by seed, bad images skipped."""

import copy
import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from curate_fixtures import BROKEN_PNG, png, scene
from PIL import Image

from vlalign.config import ConfigError, validate_config
from vlalign.curate.images import measure_image
from vlalign.data.download import run_download, source_problems
from vlalign.data.manifest import manifest_frame, manifest_row
from vlalign.data.planted import caption_derangement
from vlalign.data.shards import Sample, ShardWriter, iter_samples, shard_paths
from vlalign.schema import complete

COLOURS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple", "grey", "brown"]
SHAPES = ["circle", "square", "star", "arrow"]


def write_download(partition, samples: dict[str, tuple[bytes, str, str]], source: str = "base") -> None:
    """A download partition as `vlalign download` leaves it: shards per split and a manifest of ok rows, from
    key -> (image bytes, caption, split); the bytes are not checked, as a structure-only check would not."""
    rows = []
    for split in ("train", "eval"):
        chosen = {key: value for key, value in samples.items() if value[2] == split}
        if chosen:
            with ShardWriter(partition / split, 16) as writer:
                for key, (image, caption, _) in chosen.items():
                    writer.write(Sample(key, image, "png", caption, {"source": source, "category": "shapes"}))
    for key, (image, caption, split) in samples.items():
        rows.append({**manifest_row(key, source, key, caption, "shapes"), "status": "ok", "split": split})
    manifest_frame(rows).to_parquet(partition / "manifest.parquet", index=False)


def base_samples(n_train: int = 40, n_eval: int = 10) -> dict[str, tuple[bytes, str, str]]:
    samples = {}
    for i in range(n_train + n_eval):
        caption = f"A {COLOURS[i % 10]} {SHAPES[i // 10 % 4]} number {i}"
        samples[f"base_{i:03d}"] = (png(scene(i)), caption, "train" if i < n_train else "eval")
    return samples


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted") / "download"
    (root / "base" / "part-0000").mkdir(parents=True)
    write_download(root / "base" / "part-0000", base_samples())
    return root


PLANTED = {"type": "planted", "from": "base", "eval_from": ["base"], "shuffled_captions": 0.1, "exact_copies": 0.1,
           "near_copies": 0.1, "text_in_image": 0.1, "eval_copies": 0.1, "seed": 3, "threads": 2}  # fmt: skip


def plant(downloads, name: str = "planted", **overrides) -> tuple[dict, pd.DataFrame, dict[str, Sample]]:
    """Download a planted source beside `base`: its counts, truth and samples by key."""
    out = downloads / name / "part-0000"
    counts = run_download(name, {**PLANTED, **overrides}, out, None, 16)
    truth = pd.read_parquet(out / "planted.parquet")
    return counts, truth, {s.key: s for s in iter_samples(shard_paths(out / "train"))}


def phash_distance(a: bytes, b: bytes) -> int:
    return (int(measure_image(a)["phash"], 16) ^ int(measure_image(b)["phash"], 16)).bit_count()


def test_every_kind_is_planted_in_its_number_with_its_truth(downloads):
    counts, truth, samples = plant(downloads)
    base = {key: value for key, value in base_samples().items() if value[2] == "train"}
    # 40 train samples: 10 % of them is 4 of each kind (the originals of copies stay clean pairs); eval copies are
    # 10 % of the train size too.
    assert truth["kind"].value_counts().to_dict() == {"clean": 36, "shuffled_caption": 4, "exact_copy": 4,
                                                      "near_copy": 4, "text_in_image": 4, "eval_copy": 4}  # fmt: skip
    assert counts["ok"] == counts["items"] == 56 and counts["ok_train"] == 56
    # `from` in its order, then the added samples; every written sample has its truth, in the same order.
    assert truth["key"].tolist() == list(samples)
    assert list(samples)[:40] == list(base)
    assert truth["key"].is_unique
    originals = truth.loc[truth["kind"].isin(["shuffled_caption", "exact_copy", "near_copy", "text_in_image"])]
    assert originals["of"].str.replace(r"~.*", "", regex=True).is_unique  # one kind per original at most
    for row in truth.itertuples():
        meta = samples[row.key].meta
        assert meta["source"] == "planted" and meta["category"] == "shapes"
        assert set(meta["planted"]) == {"kind", "of", "of_source", "edit", "edit_amount"}  # the truth travels along
        assert meta["planted"]["kind"] == row.kind and meta["planted"]["of"] == (None if pd.isna(row.of) else row.of)
        if row.kind in ("exact_copy", "near_copy", "text_in_image", "eval_copy"):
            assert row.key == f"{row.of}~{row.kind}" and row.of_source == "base"


def test_shuffled_captions_are_a_derangement_among_the_chosen(downloads):
    _, truth, samples = plant(downloads)
    base = base_samples()
    shuffled = truth[truth["kind"] == "shuffled_caption"]
    assert len(shuffled) == 4
    for row in shuffled.itertuples():
        assert samples[row.key].caption != base[row.key][1]
        assert samples[row.key].caption == base[row.of][1]
        assert samples[row.key].image == base[row.key][0]  # in place: the image stays
    assert sorted(shuffled["of"]) == sorted(shuffled["key"])  # permuted among themselves
    clean = truth[truth["kind"] == "clean"]
    assert all(samples[key].caption == base[key][1] for key in clean["key"])


def test_caption_derangement_never_gives_a_sample_its_own_text():
    captions = {"a": "x", "b": "x", "c": "y", "d": "z", "e": "x", "f": "w"}
    donors = caption_derangement(list(captions), captions, seed=0)
    assert sorted(donors) == sorted(donors.values()) == sorted(captions)
    assert all(captions[receiver] != captions[donor] for receiver, donor in donors.items())
    # A caption more than half of them share: its surplus members are left out, as no permutation could serve them.
    crowded = {"a": "x", "b": "x", "c": "x", "d": "y"}
    donors = caption_derangement(list(crowded), crowded, seed=0)
    assert len(donors) == 2 and all(crowded[r] != crowded[d] for r, d in donors.items())
    assert caption_derangement(["a"], {"a": "x"}, seed=0) == {}


def test_copies_are_exact_or_near_and_text_images_show_their_caption(downloads):
    _, truth, samples = plant(downloads)
    base = base_samples()
    for row in truth[truth["kind"] == "exact_copy"].itertuples():
        assert samples[row.key].image == base[row.of][0] and samples[row.key].caption == base[row.of][1]
    near = truth[truth["kind"] == "near_copy"]
    assert near["edit"].notna().all() and near["edit_amount"].notna().all()
    for row in near.itertuples():
        copy = samples[row.key]
        assert copy.image != base[row.of][0] and copy.caption == base[row.of][1]
        Image.open(io.BytesIO(copy.image)).load()
        # Cropping a border moves pHash most (up to ~16 bits on these scenes); the other edits stay within 4.
        assert phash_distance(copy.image, base[row.of][0]) <= (16 if row.edit.startswith("crop") else 4), row
    for row in truth[truth["kind"] == "text_in_image"].itertuples():
        text = samples[row.key]
        assert text.caption == base[row.of][1]
        assert Image.open(io.BytesIO(text.image)).size == (384, 384)
    evals = {key for key, value in base.items() if value[2] == "eval"}
    for row in truth[truth["kind"] == "eval_copy"].itertuples():
        copy = samples[row.key]
        assert row.of in evals and copy.caption == base[row.of][1]
        assert (copy.image == base[row.of][0]) == pd.isna(row.edit)


def test_the_same_seed_plants_the_same_noise_and_another_seed_other_noise(downloads):
    _, first, first_samples = plant(downloads, "seeded_a")
    _, again, again_samples = plant(downloads, "seeded_b")
    pd.testing.assert_frame_equal(first, again)

    def written(sample: Sample) -> tuple:  # all but the source's own name
        return sample.key, sample.image, sample.caption, {k: v for k, v in sample.meta.items() if k != "source"}

    assert list(map(written, first_samples.values())) == list(map(written, again_samples.values()))
    _, other, _ = plant(downloads, "seeded_c", seed=4)
    assert set(other.loc[other["kind"] != "clean", "key"]) != set(first.loc[first["kind"] != "clean", "key"])


def test_a_bad_image_of_from_is_skipped_with_its_reason(tmp_path):
    samples = base_samples(6, 0)
    samples["base_002"] = (BROKEN_PNG, samples["base_002"][1], "train")  # passed a structure-only check
    (tmp_path / "base" / "part-0000").mkdir(parents=True)
    write_download(tmp_path / "base" / "part-0000", samples)
    out = tmp_path / "planted" / "part-0000"
    counts = run_download("planted", {"type": "planted", "from": "base", "shuffled_captions": 0, "exact_copies": 0,
                                      "near_copies": 1.0, "text_in_image": 0}, out, None, 16)  # fmt: skip
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert counts["ok"] == 10 and counts["failed"] == 2 and counts["error.decode_error"] == 2
    assert manifest.loc["base_002", "error"] == "decode_error"
    assert manifest.loc["base_002~near_copy", "error"] == "decode_error"
    assert "original base_002 of base" in manifest.loc["base_002~near_copy", "detail"]
    truth = pd.read_parquet(out / "planted.parquet")
    assert "base_002" not in set(truth["key"]) and len(truth) == 10  # the truth of what was written


def test_entries_that_cannot_work_are_refused(tmp_path):
    def problems(**entry):
        return source_problems(complete("sources.*", {"type": "planted", "from": "base", **entry}))

    assert problems() == []
    assert problems(eval_fraction=0.2) == ["eval_fraction: a planted source is a training source; set it to 0"]
    assert "together they may be at most 1" in problems(shuffled_captions=0.5, exact_copies=0.6)[0]
    assert problems(eval_copies=0.1)[0].startswith("eval_from: eval_copies needs")
    assert problems(max_items=3)[0].startswith("max_items: not supported for planted sources")
    assert source_problems(complete("sources.*", {"type": "planted"})) == ["from: required for type planted"]
    with pytest.raises(FileNotFoundError, match="no download of source 'base'"):
        run_download("planted", {"type": "planted", "from": "base"}, tmp_path / "planted" / "part-0000", None, 16)


def test_a_planted_sources_references_are_checked_with_the_config():
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())

    def refused(**entry) -> str:
        config = copy.deepcopy(demo)
        config["curate"]["sources"] = entry.pop("pool", ["noisy"])
        config["sources"]["noisy"] = {"type": "planted", "from": "openclipart", **entry}
        with pytest.raises(ConfigError) as error:
            validate_config(config)
        return str(error.value)

    assert "sources.noisy.from: 'nope' is not defined" in refused(**{"from": "nope"})
    assert "sources.noisy.from: 'fashion_mnist' has eval_fraction 1" in refused(**{"from": "fashion_mnist"})
    assert "sources.noisy.eval_from: 'openclipart' has eval_fraction 0" in refused(eval_from=["openclipart"],
                                                                                 eval_copies=0.1)  # fmt: skip
    assert "curate.sources: 'noisy' holds 'openclipart'" in refused(pool=["noisy", "openclipart"])
    # Left to its default, the pool takes the planted source instead of its `from`.
    config = copy.deepcopy(demo)
    config["sources"] = {n: s for n, s in config["sources"].items() if s.get("type") != "planted"}
    config["sources"]["noisy"] = {"type": "planted", "from": "openclipart"}
    del config["curate"]["sources"]
    assert validate_config(config)["curate"]["sources"] == ["tuxpaint", "noisy"]
