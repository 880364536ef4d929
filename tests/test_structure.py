"""The package's shape: imports run one way, every stage is a module of its own, the command line stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from vlalign.stage import STAGES, stages

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """vlalign module -> the vlalign modules it imports, at the top or inside a function."""
    files = {_module_name(p): p for p in (SRC / "vlalign").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                # `from pkg import name` imports the module pkg.name when there is one.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            found |= {target for target in targets if target in files and target != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 60 and "vlalign.encoders.base" in graph["vlalign.encoders.timm_image"]
    assert cycles(graph) == []


def test_encoder_implementations_depend_on_the_contract_never_the_reverse():
    graph = import_graph()
    implementations = {"vlalign.encoders.efficientnet_lite", "vlalign.encoders.timm_image", "vlalign.encoders.hf",
                       "vlalign.encoders.sentence"}  # fmt: skip
    for module in implementations:
        assert "vlalign.encoders.base" in graph[module] and "vlalign.encoders.registry" not in graph[module], module
    assert not graph["vlalign.encoders.base"] & (implementations | {"vlalign.encoders.registry"})
    assert not graph["vlalign.encoders.registry"] & implementations  # the registry names them as data


def test_every_subcommand_is_one_stage_module():
    found = stages()
    assert len(found) == len(STAGES) == len({stage.name for stage in found}) == 22
    for module, stage in zip(STAGES, found):
        assert module.endswith(f".{stage.name.replace('-', '_')}_stage"), module
    cli = (SRC / "vlalign" / "cli.py").read_text()
    assert not any(f'"{stage.name}"' in cli for stage in found)  # the command line holds no per-stage code


def test_building_the_command_line_imports_no_model_library():
    # Every stage module is imported to build the parser: each must leave its heavy domain code to `run`.
    code = ("import sys; from vlalign.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'transformers', 'webdataset', 'ffcv', 'mlflow') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
