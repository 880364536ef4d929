"""Hub encoders' weights: where they come from, whether a copy is here, and whether the hub can be asked.

A model that cannot be had fails in one line, in seconds, naming the encoder and how to use a local copy,
rather than deep inside timm, transformers or huggingface_hub after their retries:

- a copy in the local cache (huggingface_hub's, sentence-transformers' own where SENTENCE_TRANSFORMERS_HOME
  is set, torch hub's checkpoints for timm's few weights outside the hub) is loaded from its folder or file,
  so a job never waits on the network;
- a model not cached is refused at once when the hub is in offline mode (HF_HUB_OFFLINE or
  TRANSFORMERS_OFFLINE), and otherwise after one short request to the hub (HF_ENDPOINT) finds it
  unreachable, missing or gated;
- `fetch` fills the cache ahead of the jobs (the fetch-encoder stage, on a host that reaches the hub).

Settings are read from `huggingface_hub.constants` (the environment as the process started). Heavy libraries
(timm, huggingface_hub, torch) are imported only when an encoder of theirs is looked at.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlsplit

PROBE_TIMEOUT_S = 5.0  # one request, no retries: long enough for a distant hub, short enough to fail fast
# What transformers and sentence-transformers load weights from, in their order of preference.
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm asks a hub repo for, in its order
# Formats no loader here reads: left out of a download (ONNX, OpenVINO, TensorFlow, Flax, GGUF, ...).
OTHER_FORMATS = (".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".gguf", ".tflite", ".mlmodel")
OTHER_FOLDERS = ("onnx", "openvino", "coreml", "tflite")
PICKLED = (".bin", ".pt", ".pth")  # left out where safetensors of the same folder exist (loaders prefer those)


class EncoderUnavailable(ValueError):
    """A hub encoder whose weights are neither here nor to be had from the hub now."""


@dataclass(frozen=True)
class HubLocation:
    library: str  # whose cache and loader: "timm", "transformers" or "sentence-transformers"
    repo: str | None = None  # the hub repository; None for a plain URL
    revision: str = "main"
    # The files the loader reads from the repository, each group satisfied by any one of its names.
    needs: tuple[tuple[str, ...], ...] = ()
    folder: bool = True  # the local copy is the snapshot folder, else the file that satisfies the first group
    url: str | None = None  # timm weights kept outside the hub

    @property
    def where(self) -> str:
        """The model as the hub or the web names it."""
        if self.url:
            return self.url
        return self.repo if self.revision == "main" else f"{self.repo}@{self.revision}"


def locate(library: str, name: str, model_kwargs: dict) -> HubLocation | None:
    """Where the weights of `name` (a spec's model name) come from, loading nothing; None for a local folder.
    Raises ValueError for a model that the library does not know or that has no weights."""
    if library == "timm":
        return _timm_location(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if name.startswith(("/", "./", "../", "~")):
        raise ValueError(f"{name} is not a folder (a model id is 'org/name')")
    return HubLocation(library, repo=name, revision=model_kwargs.get("revision") or "main",
                       needs=(("config.json",), WEIGHTS))  # fmt: skip


def _timm_location(name: str) -> HubLocation | None:
    from timm.models import get_pretrained_cfg, is_model, parse_model_name, split_model_name_tag

    source, model_id = parse_model_name(name)  # ValueError for a name timm cannot read
    if source == "local-dir":
        return None
    if source == "hf-hub":  # the repository holds the model's config and weights
        repo, _, revision = model_id.partition("@")
        return HubLocation("timm", repo, revision or "main", needs=(("config.json",), TIMM_WEIGHTS))
    architecture, _ = split_model_name_tag(model_id)
    if not is_model(architecture):
        raise ValueError(f"timm does not know the model {architecture!r} (timm.list_models() lists those it knows)")
    try:
        cfg = get_pretrained_cfg(model_id)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise ValueError(f"timm: {exc}") from None
    if cfg and cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_WEIGHTS
        return HubLocation("timm", repo, revision or "main", needs=(files,), folder=False)
    if cfg and cfg.url:
        return HubLocation("timm", url=cfg.url, folder=False)
    raise ValueError(f"timm has no pretrained weights for {name!r}; set path to a weights file")


def offline() -> bool:
    """Whether the hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE when the process started)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def cache_dir(location: HubLocation) -> str:
    """The folder that holds the cached copy: torch hub's checkpoints for a URL, else huggingface_hub's cache
    (or sentence-transformers' own, where SENTENCE_TRANSFORMERS_HOME sets one)."""
    if location.url:
        import torch.hub

        return os.path.join(torch.hub.get_dir(), "checkpoints")
    if location.library == "sentence-transformers" and os.environ.get("SENTENCE_TRANSFORMERS_HOME"):
        return os.environ["SENTENCE_TRANSFORMERS_HOME"]
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_copy(location: HubLocation) -> str | None:
    """The local copy the loader can read instead of the hub (snapshot folder or weights file); None if any file
    the loader needs is missing from the cache."""
    folder = cache_dir(location)
    if location.url:
        path = Path(folder) / Path(urlsplit(location.url).path).name
        return str(path) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = []
    for group in location.needs:
        for filename in group:
            path = try_to_load_from_cache(location.repo, filename, cache_dir=folder, revision=location.revision)
            if isinstance(path, str) and _complete(Path(path)):
                found.append(path)
                break
        else:
            return None
    if not location.folder:
        return found[0]
    folder = Path(found[0]).parent
    # A model whose code lives in another repository loads only with that code cached too.
    for repo, module in code_repos(folder):
        if not isinstance(try_to_load_from_cache(repo, module, cache_dir=cache_dir(location)), str):
            return None
    return str(folder)


def code_repos(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(repository, module file) of the code a model's `config.json` borrows from other repositories: `auto_map`
    entries written `org/name--module.Class`, as gte-large-en-v1.5's name Alibaba-NLP/new-impl."""
    try:
        auto_map = json.loads((Path(folder) / "config.json").read_text()).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return []
    references = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value])]
    found = {(ref.split("--")[0], ref.split("--")[1].rsplit(".", 1)[0].replace(".", "/") + ".py")
             for ref in references if isinstance(ref, str) and "--" in ref}  # fmt: skip
    return sorted(found)


def _complete(path: Path) -> bool:
    """A sharded checkpoint's index counts only with all its shards beside it."""
    if not path.name.endswith(".index.json"):
        return True
    try:
        shards = set(json.loads(path.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return all((path.parent / shard).is_file() for shard in shards)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect (to a CDN) already says the file is there


def _head(url: str, headers: dict, timeout_s: float):
    """(status, headers) of one HEAD request, or the exception that prevented an answer."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method="HEAD", headers=headers), timeout=timeout_s) as answer:
            return answer.status, answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers
    except (urllib.error.URLError, OSError) as exc:
        return exc


def check_reachable(location: HubLocation, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the hub (or the URL) serves the model, else why not; one HEAD request, no retries, answered
    or given up within `timeout_s` (name resolution included)."""
    hub = endpoint()
    headers = {"User-Agent": "vlalign-hub-probe"}
    if location.url:
        url = location.url
    else:
        from huggingface_hub import get_token

        token = get_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        first = location.needs[0][0]
        url = f"{hub}/{location.repo}/resolve/{quote(location.revision, safe='')}/{first}"
    answers: list = []
    # A thread bounds the whole request: socket timeouts cover neither name resolution nor connect plus read.
    worker = threading.Thread(target=lambda: answers.append(_head(url, headers, timeout_s)), daemon=True)
    worker.start()
    worker.join(timeout_s)
    where = f"the hub at {hub}" if not location.url else location.url
    if not answers:
        return f"{where} cannot be reached (timed out after {timeout_s:g} s)"
    answer = answers[0]
    if isinstance(answer, BaseException):
        reason = getattr(answer, "reason", answer)
        if isinstance(reason, TimeoutError):
            return f"{where} cannot be reached (timed out after {timeout_s:g} s)"
        return f"{where} cannot be reached ({reason})"
    return _refusal(location, where, *answer)


def _refusal(location: HubLocation, where: str, status: int, headers) -> str | None:
    """Why an answer of the hub refuses the model (its X-Error-Code first, the status where it sends none)."""
    code = headers.get("X-Error-Code", "")
    if status < 400 or code == "EntryNotFound":  # a missing probe file still proves the repository is served
        return None
    if location.url:
        return f"{where} answered HTTP {status}"
    if code == "RevisionNotFound":
        return f"{where} has no revision {location.revision!r} of {location.repo}"
    if code == "GatedRepo" or (status in (401, 403) and code != "RepoNotFound"):
        return (f"{location.repo} is gated or private on {where} (HTTP {status}): request access there and set "
                "HF_TOKEN")  # fmt: skip
    if code == "RepoNotFound" or status == 404:
        private = " (or it is private: set HF_TOKEN)" if status == 401 else ""
        return f"{where} has no model {location.repo}{private}"
    return f"{where} answered HTTP {status}"


def advice(alias: str | None, location: HubLocation) -> str:
    """How to use a local copy instead, for this kind of model."""
    key = f"encoders.{alias}.path" if alias else "the encoder's path"
    files = "its weights file" if not location.folder else "a folder with its files (config.json, weights, tokenizer)"
    if location.url:
        fill = f"download {location.url} into {cache_dir(location)} where the network is reachable"
    else:
        revision = "" if location.revision == "main" else f" --revision {location.revision}"
        fetcher = f"vlalign fetch-encoder --encoder {alias}" if alias else "vlalign fetch-encoder"
        fill = (f"fill the hub cache where the hub is reachable ({fetcher}, or hf download {location.repo}{revision}, "
                "with the same HF_HOME) and set HF_HUB_OFFLINE=1")  # fmt: skip
    return f"use a local copy: set {key} to {files}, or {fill}"


def _not_cached(location: HubLocation) -> str:
    return f"it is not in the local cache ({cache_dir(location)}) and the hub is in offline mode (HF_HUB_OFFLINE)"


def unavailable(alias: str | None, spec: str, location: HubLocation, reason: str) -> EncoderUnavailable:
    name = f"encoder {alias!r} ({spec})" if alias else f"encoder {spec}"
    return EncoderUnavailable(f"{name}: {reason}; {advice(alias, location)}")


def local_weights(alias: str | None, spec: str, location: HubLocation,
                  timeout_s: float = PROBE_TIMEOUT_S) -> str | None:  # fmt: skip
    """The cached copy to load instead of the hub; None when none is cached but the hub serves the model (the
    loader downloads it). Raises EncoderUnavailable, within seconds, when neither holds."""
    found = cached_copy(location)
    if found:
        return found
    reason = _not_cached(location) if offline() else check_reachable(location, timeout_s)
    if reason:
        raise unavailable(alias, spec, location, reason)
    return None


def offline_problems(alias: str, spec: str, location: HubLocation) -> list[str]:
    """What the config check can know without the network: in offline mode, a model that is not cached."""
    if not offline() or cached_copy(location):
        return []
    return [f"{spec}: {_not_cached(location)}; {advice(alias, location)}"]


def fetch(alias: str, entry: dict, location: HubLocation | None, progress: bool = True,
          timeout_s: float = PROBE_TIMEOUT_S) -> dict:  # fmt: skip
    """Make sure the weights of encoder `alias` (its config entry, and where its weights come from) are in the
    local cache, downloading what is missing; a record of what is there. Packaged weights and a local `path`
    need nothing."""
    record = {"alias": alias, "spec": entry["spec"]}
    if location is None:
        path = entry.get("path")
        return {**record, "source": "path" if path else "package or folder", "local": path, "downloaded": False}
    local = local_weights(alias, entry["spec"], location, timeout_s)
    downloaded = local is None  # not cached, and the hub serves it
    if downloaded:
        try:
            _download_url(location, progress) if location.url else _download_repo(location, progress)
        except Exception as exc:  # whatever the client raises, the one-line refusal with its advice
            detail = (str(exc).strip().splitlines() or [""])[0]
            reason = f"the download failed ({type(exc).__name__}: {detail})"
            raise unavailable(alias, entry["spec"], location, reason) from exc
        local = cached_copy(location)
        if local is None:
            wanted = " and ".join(" or ".join(group) for group in location.needs)
            raise unavailable(alias, entry["spec"], location, f"the hub's copy of {location.where} lacks {wanted}")
    files = [p for p in Path(local).rglob("*") if p.is_file()] if Path(local).is_dir() else [Path(local)]
    record.update(source="url" if location.url else "hub", repo=location.repo, revision=location.revision,
                  url=location.url, local=local, downloaded=downloaded, files=len(files),
                  bytes=sum(p.stat().st_size for p in files))  # fmt: skip
    if not location.url:
        record["commit"] = Path(local if location.folder else Path(local).parent).name
    if location.folder:
        record["code_repos"] = sorted({repo for repo, _ in code_repos(local)})
    return record


def _download_url(location: HubLocation, progress: bool) -> None:
    import torch.hub

    folder = Path(cache_dir(location))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(urlsplit(location.url).path).name
    with _watch(folder, None, f"fetch {location.where}", progress):
        torch.hub.download_url_to_file(location.url, str(target), progress=False)


def _download_repo(location: HubLocation, progress: bool) -> None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import disable_progress_bars

    hub, folder = endpoint(), cache_dir(location)
    info = HfApi(endpoint=hub).model_info(location.repo, revision=location.revision, files_metadata=True)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    wanted = _wanted_files(location, list(sizes))
    disable_progress_bars()  # its carriage-return bars garble log files: Progress lines instead
    storage = Path(folder) / repo_folder_name(repo_id=location.repo, repo_type="model")
    with _watch(storage / "blobs", sum(sizes[f] for f in wanted), f"fetch {location.where}", progress):
        snapshot = snapshot_download(location.repo, revision=location.revision, cache_dir=folder, endpoint=hub,
                                     allow_patterns=wanted)  # fmt: skip
    for repo in sorted({repo for repo, _ in code_repos(snapshot)}):  # the code its config borrows (remote code)
        snapshot_download(repo, cache_dir=folder, endpoint=hub, allow_patterns=["*.py"])


def _wanted_files(location: HubLocation, names: list[str]) -> list[str]:
    """The repository's files the loader reads: for a timm weights file, the first of its names the repository
    has; otherwise everything but formats no loader here reads, and pickled weights beside safetensors."""
    if not location.folder:
        present = [name for name in location.needs[0] if name in names]
        return present[:1]
    with_safetensors = {os.path.dirname(n) for n in names if n.endswith(".safetensors")}

    def wanted(name: str) -> bool:
        folder = os.path.dirname(name)
        if name.endswith(OTHER_FORMATS) or folder.split("/")[0] in OTHER_FOLDERS:
            return False
        return not (name.endswith(PICKLED) and folder in with_safetensors)

    return [name for name in names if wanted(name)]


@contextlib.contextmanager
def _watch(folder: Path, total: int | None, label: str, enabled: bool) -> Iterator[None]:
    """Progress lines of a download, from the bytes that appear under `folder` (the libraries' own bars are
    off: their carriage returns garble log files)."""
    from vlalign.progress import Progress

    def size() -> int:
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0

    start = size()
    bar = Progress(label, total=total, unit="bytes", enabled=enabled)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(1.0):
            with contextlib.suppress(OSError):  # a file renamed between listing and stat
                bar.update(max(size() - start - bar.done, 0))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        with contextlib.suppress(OSError):
            bar.update(max(size() - start - bar.done, 0))
        bar.close()
