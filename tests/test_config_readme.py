"""config/README.md is generated from the configuration schema by scripts/config_readme.py: a README that
differs from what the script writes fails here, so the documented keys and defaults cannot drift."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from vlalign.schema import default, locate

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "config_readme.py"
README = REPO / "config" / "README.md"


def _script():
    spec = importlib.util.spec_from_file_location("config_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text: str, path: str) -> str:
    """The part of the README under the heading of `path`, up to the next heading."""
    match = re.search(rf"^#+ `{re.escape(path)}`.*?\n(.*?)(?=^#)", text + "\n#", re.S | re.M)
    assert match, f"no section for {path}"
    return match.group(1)


def test_committed_readme_is_what_the_script_writes():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_fails_on_a_stale_readme(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script, "README", tmp_path / "README.md")
    assert script.main(["--check"]) == 1  # missing
    assert script.main([]) == 0
    assert script.main(["--check"]) == 0
    (tmp_path / "README.md").write_text("# Configuration\n")
    assert script.main(["--check"]) == 1
    assert "python scripts/config_readme.py" in capsys.readouterr().err


def test_readme_holds_the_schema_facts():
    text = README.read_text()
    assert text.startswith("# Configuration\n\n> Generated from")
    batch = default("train.defaults.batch_size")
    assert f"| `batch_size` | `{batch}` |" in _section(text, "train.defaults")
    min_words = default("curate.filters.caption.min_words")
    assert f"| `min_words` | `{min_words}` |" in _section(text, "curate.filters.caption")
    # Every source type is explained in the prose of a source entry, not only listed by the schema.
    entry = _section(text, "sources.<name>")
    missing = [kind for kind in locate("sources.*")["properties"]["type"]["enum"] if f"`{kind}`" not in entry]
    assert missing == []
    assert "| `type` | (required) |" in entry
