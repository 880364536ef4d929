"""Hub encoders: a model that cannot be had fails fast in one line; a cached one loads without the network.

Every request goes to 127.0.0.1: a closed port, a socket that never answers, or `hub_server.HubServer`
serving tiny random models (BERT, a sentence-transformers model built on it, a timm ResNet-18) the way the
hub does, so huggingface_hub's own downloads fill a real cache in a temporary folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import yaml
from huggingface_hub import snapshot_download
from transformers import BertConfig, BertModel, BertTokenizer

from hub_server import HubServer, commit_of
from vlalign.config import ConfigError, validate_config
from vlalign.encoders import EncoderUnavailable, create_encoder, hub_location, uses_hub
from vlalign.encoders.hub import WEIGHTS, HubLocation, cached_copy, check_reachable, fetch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "sat", "on", "the", "mat"]
TINY_RESNET = dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8)
TIMM_REPO = "timm/resnet18.a1_in1k"  # where timm looks for resnet18's weights
# Loose bounds of correctness (the probe's timeout is 5 s), not timings: those are in the report to the lead.
FAST_S = 15.0

# alias -> (config entry, the hub repository that serves it)
ENCODERS = {
    "bert": ({"spec": "hf-text:org/tiny-bert", "pooling": "cls", "precision": "fp32"}, "org/tiny-bert"),
    "minilm_st": ({"spec": "st:org/tiny-st", "precision": "fp32"}, "org/tiny-st"),
    "resnet": ({"spec": "timm:resnet18", "model_kwargs": TINY_RESNET, "precision": "fp32"}, TIMM_REPO),
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The tiny models as saved by their libraries: what a hub repository holds."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules (the old path still works, with a warning)
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    root = tmp_path_factory.mktemp("models")
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(bert)
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(bert)
    st = root / "st"
    SentenceTransformer(modules=[Transformer(str(bert)), Pooling(16, "mean")], device="cpu").save(str(st))
    resnet = root / "resnet" / "model.safetensors"
    resnet.parent.mkdir()
    safetensors.torch.save_file(timm.create_model("resnet18", **TINY_RESNET).state_dict(), resnet)
    return {"bert": bert, "minilm_st": st, "resnet": resnet}


@pytest.fixture(scope="module")
def hub(sources):
    repos = {ENCODERS[alias][1]: _files(sources[alias]) for alias in ("bert", "minilm_st")}
    repos[TIMM_REPO] = {"model.safetensors": sources["resnet"].read_bytes(), "README.md": b"tiny"}
    server = HubServer(repos).start()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub_settings(monkeypatch):
    """Point huggingface_hub's settings (the environment as a process starts with it) at a hub and a cache."""

    def point(endpoint: str, cache: Path, offline: bool = False) -> None:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)

    return point


@pytest.fixture(scope="module")
def filled_cache(hub, tmp_path_factory) -> Path:
    """A real hub cache, laid out by huggingface_hub's own download from the loopback hub."""
    cache = tmp_path_factory.mktemp("hf-cache")
    for _, repo in ENCODERS.values():
        snapshot_download(repo, cache_dir=cache, endpoint=hub.base)
    return cache


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every attempt to open a connection or resolve a name is recorded and fails."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _build(alias: str, **options):
    entry, _ = ENCODERS[alias]
    return create_encoder(entry["spec"], alias=alias, **{k: v for k, v in entry.items() if k != "spec"}, **options)


@pytest.mark.parametrize("alias", sorted(ENCODERS))
def test_an_uncached_model_fails_fast_in_one_line_when_the_hub_is_unreachable(alias, closed_port, hub_settings,
                                                                               tmp_path):  # fmt: skip
    hub_settings(f"http://127.0.0.1:{closed_port}", tmp_path / "empty-cache")
    started = time.monotonic()
    with pytest.raises(EncoderUnavailable) as raised:
        _build(alias)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    entry, repo = ENCODERS[alias]
    assert "\n" not in message and elapsed < FAST_S
    assert message.startswith(f"encoder '{alias}' ({entry['spec']}): the hub at http://127.0.0.1:{closed_port} "
                              "cannot be reached")  # fmt: skip
    assert f"set encoders.{alias}.path to" in message and f"hf download {repo}" in message
    assert "HF_HUB_OFFLINE=1" in message
    # A file for timm's path, a folder for transformers' and sentence-transformers'.
    assert ("its weights file" in message) == (alias == "resnet")


def test_offline_mode_refuses_an_uncached_model_without_asking_the_hub(hub, hub_settings, tmp_path, no_network):
    hub_settings(hub.base, tmp_path / "empty-cache", offline=True)
    with pytest.raises(EncoderUnavailable, match=r"not in the local cache .* offline mode"):
        _build("bert")
    assert no_network == []


def test_the_network_guard_sees_the_probe(hub, hub_settings, tmp_path, no_network):
    hub_settings(hub.base, tmp_path)  # the tests' proof of "no network" would see any request
    reason = check_reachable(HubLocation("transformers", "org/tiny-bert", needs=(("config.json",),)))
    assert "network disabled by the test" in reason and no_network


def test_the_probe_gives_up_on_a_hub_that_never_answers(hub_settings, tmp_path):
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        hub_settings(f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path)
        started = time.monotonic()
        reason = check_reachable(HubLocation("transformers", "org/x", needs=(("config.json",),)), timeout_s=1.0)
        elapsed = time.monotonic() - started
    assert reason.endswith("cannot be reached (timed out after 1 s)") and elapsed < 3


@pytest.mark.parametrize("status, code, expected", [
    (404, "RepoNotFound", "has no model org/x"),
    (404, "", "has no model org/x"),
    (401, "RepoNotFound", "has no model org/x (or it is private: set HF_TOKEN)"),
    (401, "GatedRepo", "org/x is gated or private"),
    (403, "", "org/x is gated or private"),
    (404, "RevisionNotFound", "has no revision 'main' of org/x"),
    (503, "", "answered HTTP 503"),
])  # fmt: skip
def test_the_probe_names_a_missing_or_gated_model(hub, hub_settings, tmp_path, status, code, expected):
    hub.refusals["org/x"] = (status, code)
    hub_settings(hub.base, tmp_path)
    try:
        reason = check_reachable(HubLocation("transformers", "org/x", needs=(("config.json",),)))
    finally:
        del hub.refusals["org/x"]
    assert reason.startswith(f"the hub at {hub.base} ") or reason.startswith("org/x is gated")
    assert expected in reason


def test_the_probe_accepts_a_served_model(hub, hub_settings, tmp_path):
    hub_settings(hub.base, tmp_path)
    assert check_reachable(HubLocation("transformers", "org/tiny-bert", needs=(("config.json",),))) is None
    # A repository without the probed file is still served: the loader finds what it has.
    assert check_reachable(HubLocation("timm", TIMM_REPO, needs=(("pytorch_model.bin",),), folder=False)) is None


def test_a_missing_model_is_refused_when_built(hub, hub_settings, tmp_path):
    hub_settings(hub.base, tmp_path)
    with pytest.raises(EncoderUnavailable, match=r"encoder 'gone' \(hf-text:org/gone\): the hub at .* has no model"):
        create_encoder("hf-text:org/gone", alias="gone", pooling="cls")


def test_cached_models_load_without_the_network(filled_cache, sources, hub_settings, closed_port, no_network):
    hub_settings(f"http://127.0.0.1:{closed_port}", filled_cache)
    bert, st, resnet = (_build(alias) for alias in ("bert", "minilm_st", "resnet"))
    assert no_network == []  # no probe, no library call reached for the network
    texts = ["the cat sat on the mat", "a dog"]
    from_path = create_encoder("hf-text:org/tiny-bert", path=sources["bert"], pooling="cls", precision="fp32")
    np.testing.assert_allclose(bert.encode(texts), from_path.encode(texts), atol=1e-6)
    from_path = create_encoder("st:org/tiny-st", path=sources["minilm_st"], precision="fp32")
    np.testing.assert_allclose(st.encode(texts), from_path.encode(texts), atol=1e-6)
    # The configured path is what gets recorded, never this machine's cache folder.
    assert bert.describe()["path"] is None and st.describe()["path"] == "org/tiny-st"
    images = torch.randint(0, 256, (2, 3, resnet.image_size, resnet.image_size), dtype=torch.uint8)
    from_path = create_encoder("timm:resnet18", path=sources["resnet"], model_kwargs=TINY_RESNET, precision="fp32")
    torch.testing.assert_close(resnet(images), from_path(images))
    assert resnet.describe()["path"] is None


def test_where_weights_come_from(tmp_path):
    assert [uses_hub({"spec": s}) for s in ("efficientnet-lite0", "all-minilm-l6-v2", "timm:x", "st:x")] == [
        False, False, True, True]
    assert not uses_hub({"spec": "hf:x", "path": "folder"})
    assert hub_location({"spec": "efficientnet-lite0"}) is None
    assert hub_location({"spec": "timm:resnet18", "path": "w.safetensors"}) is None
    assert hub_location({"spec": f"st:{tmp_path}"}) is None  # a spec may name a local folder
    assert hub_location({"spec": "hf:org/m", "model_kwargs": {"revision": "v2"}}) == HubLocation(
        "transformers", "org/m", "v2", needs=(("config.json",), WEIGHTS))
    dinov2 = hub_location({"spec": "timm:vit_large_patch14_dinov2.lvd142m"})
    assert (dinov2.repo, dinov2.folder, dinov2.needs) == ("timm/vit_large_patch14_dinov2.lvd142m", False,
                                                          (("model.safetensors", "pytorch_model.bin"),))
    assert hub_location({"spec": "timm:hf-hub:org/vit@v1"}).where == "org/vit@v1"
    assert hub_location({"spec": "timm:gcvit_tiny.in1k"}).url.endswith(".pth")  # weights outside the hub
    with pytest.raises(ValueError, match="timm does not know the model 'no_such_net'"):
        hub_location({"spec": "timm:no_such_net"})
    with pytest.raises(ValueError, match="Invalid pretrained tag"):
        hub_location({"spec": "timm:resnet18.bogus"})
    with pytest.raises(ValueError, match="is not a folder"):
        hub_location({"spec": f"hf:{tmp_path}/missing"})


def _hub_config(**encoders) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["encoders"].update(encoders)
    config["text_encoder"] = "bert"
    return config


def test_the_config_check_refuses_what_cannot_load_before_any_job(filled_cache, hub_settings, closed_port, tmp_path,
                                                                  no_network):  # fmt: skip
    bert = ENCODERS["bert"][0]
    hub_settings(f"http://127.0.0.1:{closed_port}", tmp_path / "empty-cache", offline=True)
    with pytest.raises(ConfigError) as raised:
        validate_config(_hub_config(bert=bert))
    line = next(line for line in str(raised.value).splitlines() if "encoders.bert" in line)
    assert "hf-text:org/tiny-bert: it is not in the local cache" in line and "offline mode" in line
    assert "set encoders.bert.path to a folder" in line and "hf download org/tiny-bert" in line
    hub_settings(f"http://127.0.0.1:{closed_port}", filled_cache, offline=True)
    validate_config(_hub_config(bert=bert))  # cached: nothing to refuse
    hub_settings(f"http://127.0.0.1:{closed_port}", tmp_path / "empty-cache")
    validate_config(_hub_config(bert=bert))  # online, the hub is the job's to ask
    image = {"spec": "timm:vit_huge_patch99", "pooling": "cls"}
    with pytest.raises(ConfigError, match=r"encoders.vit: timm:vit_huge_patch99: timm does not know the model"):
        validate_config({**_hub_config(bert=bert, vit=image), "image_encoder": "vit"})
    assert no_network == []


def test_snakemake_refuses_an_offline_config_whose_model_is_not_cached(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(_hub_config(bert=ENCODERS["bert"][0])))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # fmt: skip
    result = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "-n"], cwd=workdir,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "encoders.bert: hf-text:org/tiny-bert: it is not in the local cache" in output
    assert not (workdir / "results").exists()


def _vlalign(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "vlalign"), *args], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_fetch_encoder_fills_the_cache_from_the_hub_then_loads_offline(hub, tmp_path, hub_settings, closed_port,
                                                                       no_network):  # fmt: skip
    cache = tmp_path / "cache"
    settings = {"experiment": "hub-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "encoder": ENCODERS["bert"][0]}  # fmt: skip
    env = {"HF_ENDPOINT": hub.base, "HF_HUB_CACHE": str(cache)}
    out = tmp_path / "encoders" / "bert.json"
    hub.requests.clear()
    first = _vlalign("fetch-encoder", "--settings", json.dumps(settings), "--encoder", "bert", "--out", str(out),
                     env=env, cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    record = json.loads(out.read_text())
    commit = commit_of(hub.repos["org/tiny-bert"])
    assert (record["alias"], record["repo"], record["revision"], record["commit"]) == ("bert", "org/tiny-bert",
                                                                                      "main", commit)  # fmt: skip
    assert record["downloaded"] is True and record["files"] == len(hub.repos["org/tiny-bert"])
    assert record["bytes"] == sum(len(data) for data in hub.repos["org/tiny-bert"].values())
    snapshot = cache / "models--org--tiny-bert" / "snapshots" / commit
    assert record["local"] == str(snapshot) and (cache / "models--org--tiny-bert/refs/main").read_text() == commit
    assert "fetch org/tiny-bert:" in first.stderr and "Fetching" not in first.stderr  # ours, not the client's bars
    gets = hub.file_gets()
    again = _vlalign("fetch-encoder", "--settings", json.dumps(settings), "--encoder", "bert", "--out", str(out),
                     env=env, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and json.loads(out.read_text())["downloaded"] is False and hub.file_gets() == gets
    # The jobs then load the cached copy with the hub out of reach.
    hub_settings(f"http://127.0.0.1:{closed_port}", cache)
    assert _build("bert").dim == 16 and no_network == []


def test_fetch_encoder_fails_in_one_line_when_the_hub_is_unreachable(tmp_path, closed_port):
    settings = {"experiment": "hub-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "encoder": ENCODERS["minilm_st"][0]}  # fmt: skip
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port}", "HF_HUB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "st.json"
    started = time.monotonic()
    result = _vlalign("fetch-encoder", "--settings", json.dumps(settings), "--encoder", "minilm_st", "--out",
                      str(out), env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and time.monotonic() - started < 120  # most of it is importing MLflow
    *before, last = result.stderr.strip().splitlines()
    assert last.startswith("vlalign fetch-encoder: error: encoder 'minilm_st' (st:org/tiny-st): the hub at ")
    # Nothing from the hub client before it (MLflow may say that it creates its store).
    assert not [line for line in before if "Traceback" in line or "hub" in line.lower() or "error" in line.lower()]
    assert not out.exists()


def test_fetch_records_packaged_and_cached_models(filled_cache, hub_settings, closed_port, no_network):
    hub_settings(f"http://127.0.0.1:{closed_port}", filled_cache)
    packaged = fetch("lite0", {"spec": "efficientnet-lite0"}, None)
    assert packaged["source"] == "package or folder" and packaged["downloaded"] is False
    entry = ENCODERS["resnet"][0]
    record = fetch("resnet", entry, hub_location(entry))
    assert (record["repo"], record["downloaded"], record["files"]) == (TIMM_REPO, False, 1)
    assert record["local"].endswith("model.safetensors") and no_network == []


def test_fetch_also_caches_the_code_a_config_borrows_from_another_repository(hub, hub_settings, tmp_path,
                                                                             closed_port):  # fmt: skip
    """gte-large-en-v1.5's config.json maps its classes to Alibaba-NLP/new-impl: a cached copy without that code
    would fail to load offline, so it is fetched with the model and counted in whether the model is cached."""
    model = dict(hub.repos["org/tiny-bert"])
    config = json.loads(model["config.json"])
    config["auto_map"] = {"AutoConfig": "org/shared-code--configuration.TinyConfig",
                          "AutoModel": "org/shared-code--modeling.TinyModel"}  # fmt: skip
    model["config.json"] = json.dumps(config).encode()
    hub.repos["org/borrows-code"] = model
    hub.repos["org/shared-code"] = {"configuration.py": b"# config\n", "modeling.py": b"# model\n",
                                    "README.md": b"not code"}  # fmt: skip
    entry = {"spec": "hf-text:org/borrows-code", "pooling": "cls"}
    location = hub_location(entry)
    hub_settings(f"http://127.0.0.1:{closed_port}", tmp_path / "cache")
    assert cached_copy(location) is None
    settings = {"experiment": "hub-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "encoder": entry}
    out = tmp_path / "borrowed.json"
    fetched = _vlalign("fetch-encoder", "--settings", json.dumps(settings), "--encoder", "borrowed", "--out", str(out),
                       env={"HF_ENDPOINT": hub.base, "HF_HUB_CACHE": str(tmp_path / "cache")}, cwd=tmp_path)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    record = json.loads(out.read_text())
    assert record["code_repos"] == ["org/shared-code"] and record["downloaded"] is True
    code = tmp_path / "cache" / "models--org--shared-code" / "snapshots" / commit_of(hub.repos["org/shared-code"])
    assert sorted(p.name for p in code.iterdir()) == ["configuration.py", "modeling.py"]
    assert cached_copy(location) == record["local"]
    for path in code.iterdir():  # without the borrowed code the copy does not count as cached
        path.unlink()
    assert cached_copy(location) is None
