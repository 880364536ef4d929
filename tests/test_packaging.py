"""Project files that must agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_conda_env_mirrors_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "vlalign.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert readme.startswith("# vlalign\n\n```bash\nmake run")
    assert "make test" in readme.split("```")[1]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_rule_has_a_log_and_every_heavy_rule_a_benchmark():
    blocks = 0
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        # Rules may sit inside an if/else (embed: one job, or scatter + gather).
        for block in re.split(r"^\s*rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            blocks += 1
            assert "log:" in block, smk
            if smk.stem != "report":  # the report rule only tabulates small JSON files
                assert "benchmark:" in block, smk
    assert blocks == 25
