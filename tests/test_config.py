import copy
from pathlib import Path

import pytest
import yaml

from vlalign.config import ConfigError, load_config, probe_settings, train_settings, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_demo_config_is_valid_and_defaults_are_filled(demo):
    config = validate_config(demo)
    assert config["train"]["defaults"]["logit_bias_init"] == -10.0
    assert config["sources"]["openclipart"]["max_items"] is None
    assert train_settings(config, "basic")["lr"] == demo["train"]["defaults"]["lr"]
    assert "pool" not in train_settings(config, "basic")
    assert probe_settings(config)["head"] == "linear"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c["train"]["defaults"].update(lr="fast"), "train.defaults.lr"),
        (lambda c: c["train"]["runs"].update(x={"head": "huge"}), "train.runs.x.head"),
        (lambda c: c["train"]["runs"].update(x={"lrr": 1}), "train.runs.x"),
        (lambda c: c["curate"].update(min_side=-1), "curate"),
        (lambda c: c["curate"]["pools"].update(p=["nope"]), "curate.pools.p.0"),
        (lambda c: c["curate"]["filters"]["caption"].update(min_wrds=1), "curate.filters.caption"),
        (lambda c: c["curate"]["measure"].update(ocr="sometimes"), "curate.measure"),
        (lambda c: c["train"]["runs"].update(x={"pool": "missing"}), "train.runs.x.pool"),
        (lambda c: c["probe"].update(pool="missing"), "probe.pool"),
        (lambda c: c["curate"]["filters"]["alignment"].update(run="nope"), "curate.filters.alignment.run"),
        (lambda c: c["train"]["runs"]["basic"].update(pool="aligned"), "trains on a pool that its own scores filter"),
        (lambda c: c["curate"]["filters"]["alignment"].update(top_fraction=1.5), "curate.filters.alignment.top_fraction"),
        (lambda c: c.update(image_encoder="nope"), "image_encoder"),
        (lambda c: c["curate"].update(sources=["missing"]), "curate.sources"),
        (lambda c: c["evaluate"].update(retrieval=["openclipart"]), "no eval split"),
        (lambda c: c["sources"]["tuxpaint"].update(type="ftp"), "sources.tuxpaint.type"),
        (lambda c: c["sources"].update(web={"type": "url_list"}), "sources.web.path: required"),
        (lambda c: c["sources"].update(shards={"type": "webdataset"}), "sources.shards.urls: required"),
        (lambda c: c["evaluate"].update(templates=["no placeholder"]), "evaluate.templates.0"),
        (lambda c: c["train"]["runs"].update(x={"multi_positive": True}), "train.runs.x.multi_positive: needs"),
        (lambda c: c.update(captions={"extra": ["long caption"]}), "captions.extra.0"),
        (lambda c: c.update(negatives={"rules": ["antonyms"]}), "negatives.rules.0"),
        (lambda c: c["encoders"]["minilm_l6"].update(pooling="concat"), "encoders.minilm_l6: pooling"),
        (lambda c: c["encoders"]["efficientnet_lite0"].update(spec="clip:vit"), "encoders.efficientnet_lite0: unknown"),
        (lambda c: c.update(text_encoder="efficientnet_lite0"), "text_encoder: 'efficientnet_lite0' is not a text"),
        (lambda c: c["embed"].update(parts=0), "embed.parts"),
        (lambda c: c["train"].update(gpus=0), "train.gpus"),
        (lambda c: c["sources"].update(s={"type": "synthetic_compositional"}), "sources.s.eval_fraction: a synthetic"),
        (lambda c: c["evaluate"].update(compositional=["tuxpaint"]), "is not a source of type sugarcrepe, synthetic_compositional, winoground"),
        (lambda c: c["probe"].update(image_encoders=[]), "probe.image_encoders"),
        (lambda c: c["probe"].update(text_encoders=["minilm_l6", "nope"]), "probe.text_encoders.1: 'nope' is not"),
        (lambda c: c["probe"].update(image_encoders=["minilm_l6"]), "probe.image_encoders.0: 'minilm_l6' is not an"),
        (lambda c: c["encoders"]["minilm_l6"].update(random_init=-1), "encoders.minilm_l6.random_init"),
    ],
)
def test_bad_config_is_refused_naming_the_key(demo, edit, message):
    bad = copy.deepcopy(demo)
    edit(bad)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(bad)


def test_unreadable_config_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
