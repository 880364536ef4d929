"""Hostile input: only http(s) is fetched, tar members cannot escape, pixel bombs are refused from their header,
nothing is unpickled, and no shell command is built from unquoted config or data strings."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from source_config import source_config

from vlalign.data.images import inspect_image
from vlalign.data.shards import iter_samples
from vlalign.data.download import run_download
from image_server import image_bytes, png_bomb

REPO = Path(__file__).resolve().parents[1]


def test_only_http_and_https_urls_are_fetched(server, tmp_path):
    urls = {
        server.url("/jpg/plain"): None,
        server.url("/jpg/upper").replace("http://", "HTTP://"): None,  # schemes are case-insensitive
        "ftp://127.0.0.1/x.jpg": "bad_scheme",
        "file:///etc/passwd": "bad_scheme",
        "data:image/png;base64,iVBORw0KGgo=": "bad_scheme",
        "gopher://127.0.0.1:70/x": "bad_scheme",
        "javascript:alert(1)": "bad_scheme",
        "//127.0.0.1/no-scheme.jpg": "bad_scheme",
        server.url("/to-file"): "bad_scheme",  # a redirect to file:// is not followed
    }
    pd.DataFrame({"url": list(urls), "caption": ["a caption"] * len(urls)}).to_parquet(tmp_path / "u.parquet")
    run_download("web", source_config("url_list", path=str(tmp_path / "u.parquet"), retries=0), tmp_path / "o", None,
                 100)  # fmt: skip
    manifest = pd.read_parquet(tmp_path / "o" / "manifest.parquet")
    assert [None if pd.isna(e) else e for e in manifest["error"]] == list(urls.values())
    assert set(server.requests) == {"/jpg/plain", "/jpg/upper", "/to-file"}


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../escape", "/abs/escape", "a/../../escape"])
def test_tar_members_that_escape_are_rejected(tmp_path, name):
    image = image_bytes("PNG")
    members = {"good.png": image, "good.txt": b"a red square", f"{name}.png": image, f"{name}.txt": b"out"}
    shard = _tar(tmp_path / "shard-000000.tar", members)
    # Shards of the workflow's own stages: the whole shard is refused, naming it.
    with pytest.raises(ValueError, match=re.escape(f"{shard}: member ") + ".*escapes the shard"):
        list(iter_samples([shard]))
    # A webdataset source: the sample is recorded as failed, the others written, nothing lands outside `out`.
    out = tmp_path / "work" / "out"
    summary = run_download("wds", source_config("webdataset", urls=[str(shard)], min_side=1), out, None, 100)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert summary["items"] == 2 and summary["ok"] == 1
    assert manifest.set_index("origin").loc[f"{shard}#{name}", "error"] == "unsafe_name"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]
    assert not list(tmp_path.rglob("escape*"))


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    # Headers claiming 30000 x 30000 and 9000 x 8000 pixels over a few bytes of data: a decode would fail as
    # decode_error, so too_many_pixels shows the header alone decided.
    for width, height in ((30000, 30000), (9000, 8000)):
        check = inspect_image(png_bomb(width, height), max_pixels=64_000_000)
        assert (check.error, check.data) == ("too_many_pixels", None), check
    # A real, decodable image over a configured limit.
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 1000)).save(buffer, format="PNG")
    assert inspect_image(buffer.getvalue(), max_pixels=1_000_000).error == "too_many_pixels"
    assert inspect_image(buffer.getvalue(), max_pixels=1_200_000).error is None


UNSAFE_CALLS = {
    r"torch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
    r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(": "unpickling",
    r"allow_pickle=True": "numpy unpickling",
    r"yaml\.load\(|yaml\.unsafe_load|Loader=yaml\.Loader": "unsafe YAML",
    r"(?<![.\w])(eval|exec)\(": "eval/exec",
    r"shell=True|os\.system\(|os\.popen\(": "a shell",
    r"\.extractall\(": "tar extraction by member name",
}


def test_no_source_file_unpickles_or_runs_a_shell():
    found = []
    for path in sorted((REPO / "src" / "vlalign").rglob("*.py")):
        text = path.read_text()
        for pattern, what in UNSAFE_CALLS.items():
            found += [f"{path.relative_to(REPO)}: {what}" for _ in re.finditer(pattern, text)]
    assert found == []


# Placeholders that may stand unquoted in a shell command: numbers the workflow itself makes.
UNQUOTED_OK = {
    "wildcards.part",  # constrained to \d+ in common.smk
    "wildcards.partition",  # constrained to \d{4} in common.smk
    "params.parts",  # embed.parts, a validated integer
    "params.launcher",  # "vlalign", or torchrun with train.gpus, a validated integer
}


def shell_placeholders() -> list[tuple[str, str]]:
    """(rule file, placeholder) of every {...} in every `shell:` command of the workflow."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "shell:":
                continue
            command = []
            for following in lines[i + 1:]:
                if not following.strip().startswith(('"', "'", 'f"', "r\"")):
                    break
                command.append(following)
            found += [(smk.name, p) for p in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", "".join(command))]
    return found


def test_shell_commands_quote_every_config_and_data_string():
    placeholders = shell_placeholders()
    assert len(placeholders) > 40  # the parse found the commands
    unquoted = [(smk, p) for smk, p in placeholders if not p.endswith(":q") and p not in UNQUOTED_OK]
    assert unquoted == []
