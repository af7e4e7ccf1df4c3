"""Layers point one way: the import graph of src/birdsed (read statically with ast) has no cycle between its
subpackages and top-level modules (docs/architecture.md gives the order)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import birdsed

ROOT = Path(birdsed.__file__).parent


def unit_of(module: str) -> str | None:
    """The layer a module belongs to: its subpackage (birdsed.model.sed -> model) or the top-level module itself
    (birdsed.rows -> rows); None for birdsed itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "birdsed" else None


def import_graph(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """{unit: {imported unit: "file:line" of one such import}} over every import, lazy ones inside functions too."""
    graph: dict[str, dict[str, str]] = {}
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root.parent).with_suffix("")
        src = unit_of(".".join(rel.parts if rel.name != "__init__" else rel.parts[:-1]))
        if src is None or src == "__main__":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "birdsed"]
            else:
                continue
            for name in names:
                dst = unit_of(name)
                if dst and dst != src and ((root / dst).is_dir() or (root / f"{dst}.py").is_file()):
                    graph.setdefault(src, {}).setdefault(dst, f"{rel}.py:{node.lineno}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in graph.get(u, {}):
            if state.get(v) == 1:
                return path[path.index(v) :] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        path.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_the_subpackages_of_birdsed_form_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    where = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])] if cycle else []
    assert cycle is None, "import cycle between layers: " + "; ".join(where)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {}}) is None


def test_decisions_and_config_sit_below_model_and_infer():
    graph = import_graph()
    for low in ("config", "decisions", "rows", "errors"):
        assert not {"model", "infer", "kaggle", "train"} & set(graph.get(low, {})), (low, graph.get(low))


def test_config_checks_a_backbone_by_name_without_importing_the_network():
    code = (
        "import sys\n"
        "from birdsed.config import Config\n"
        "Config().check()\n"
        "from birdsed.model.meta import read_model_meta\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_backbone_names_config_knows_are_the_networks_sed_builds():
    from birdsed.config.choices import BACKBONES, CNN_BACKBONES
    from birdsed.model.sed import BACKBONES as NETWORKS

    assert sorted(NETWORKS) == sorted(CNN_BACKBONES) and set(BACKBONES) == {*CNN_BACKBONES, "birdnet"}
