"""The package's imports run one way, down its layers: no module imports, even lazily inside a function, a module of
a higher layer (LAYERS, bottom to top), nor one that imports it back (a circle: as task.py once did on the CLI for
its logging set-up). `pipeline/scaling/` is a leaf library: it imports nothing of the package outside itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports anywhere in its body (top level or inside functions)."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _is_package_reexport(comp: list[str]) -> bool:
    """A package `__init__` re-exporting its own submodules, which import siblings relatively: not a layer
    violation (pipeline.scaling: __init__ -> fit -> laws; fit imported back as `.fit`)."""
    root = min(comp, key=len)
    return (ROOT.parent / root.replace(".", "/") / "__init__.py").exists() and all(
        c == root or c.startswith(root + ".") for c in comp)


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert "pipeline.task" in graph and "pipeline.logs" in graph["pipeline.task"]
    bad = [c for c in cycles(graph) if not _is_package_reexport(c)]
    assert not bad, "import circles: " + "; ".join(" <-> ".join(c) for c in bad)


def test_logs_is_a_stdlib_leaf():
    assert import_graph()["pipeline.logs"] == set()


# The package's layers, bottom to top: a module may import its own layer and those below it, never one above. An
# entry is a module or a package (every module in it). Derived from the code; docs/ARCHITECTURE.md draws it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # stdlib-level pieces and the registries everything reads (each stage, metric and data source once)
    ("foundations", ("pipeline", "pipeline.logs", "pipeline.typed", "pipeline.validate", "pipeline.stages",
                     "pipeline.metrics", "pipeline.data_sources")),
    # libraries that import nothing of the package: the fitter, the significance tests
    ("libraries", ("pipeline.scaling", "pipeline.significance")),
    ("files", ("pipeline.artifacts", "pipeline.tracking")),
    ("config", ("pipeline.study", "pipeline.config")),
    # where text comes from, how it is read as tokens (vocabulary, streams), and the table the read-only stages share
    ("data", ("pipeline.sources", "pipeline.corpus", "pipeline.vocab", "pipeline.streams", "pipeline.results")),
    ("model", ("pipeline.precision", "pipeline.model", "pipeline.span_corruption", "pipeline.greedy",
               "pipeline.memory", "pipeline.distributed", "pipeline.seq2seq")),
    ("training", ("pipeline.training", "pipeline.tokenizer", "pipeline.tokens", "pipeline.mixture")),
    # the stages, in pipeline order: a stage may use an earlier one, never a later one
    ("pretrain", ("pipeline.pretrain",)),
    ("finetune", ("pipeline.finetune",)),
    ("evaluate", ("pipeline.evaluate",)),
    ("collect", ("pipeline.collect",)),
    ("fit", ("pipeline.fit",)),
    ("report", ("pipeline.report",)),
    # planning: what a sweep costs, whether its jobs fit, the DAG
    ("plan", ("pipeline.budget", "pipeline.checks", "pipeline.sweep_precision", "pipeline.plan")),
    ("running", ("pipeline.task", "pipeline.progress", "pipeline.executors", "pipeline.run", "pipeline.__main__")),
]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of the layer holding `module`: the longest entry that is it or a package above it (the root
    package's entry, `pipeline`, is its __init__ alone)."""
    best: tuple[int, int] | None = None
    for i, (_, entries) in enumerate(layers):
        for e in entries:
            inside = module == e or ("." in e and module.startswith(e + "."))
            if inside and (best is None or len(e) > best[1]):
                best = (i, len(e))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer to a higher one, as `a (layer) -> b (layer)`."""
    out = []
    for a, deps in sorted(graph.items()):
        la = layer_of(a, layers)
        for b in sorted(deps):
            lb = layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({layers[la][0]}) -> {b} ({layers[lb][0]})")
    return out


def test_the_layer_checker_flags_an_import_running_up():
    graph = import_graph()
    assert upward_imports({"pipeline.artifacts": {"pipeline.validate"}}) == []
    planted = {**graph, "pipeline.artifacts": graph["pipeline.artifacts"] | {"pipeline.config"}}
    assert upward_imports(planted) == ["pipeline.artifacts (files) -> pipeline.config (config)"]
    # a package's entry covers its modules, a module's own entry wins over its package's
    assert upward_imports({"pipeline.scaling.backtest": {"pipeline.fit"}}) == [
        "pipeline.scaling.backtest (libraries) -> pipeline.fit (fit)"]
    assert layer_of("pipeline.report.fmt") == layer_of("pipeline.report") and layer_of("pipeline.nowhere") is None
    assert layer_of("pipeline") == 0
    two = [("low", ("pipeline.x.y",)), ("high", ("pipeline.x",))]
    assert layer_of("pipeline.x.y.z", two) == 0 and layer_of("pipeline.x.w", two) == 1
    assert upward_imports({"pipeline.x.y": {"pipeline.x.w"}}, two) == ["pipeline.x.y (low) -> pipeline.x.w (high)"]


def test_every_module_has_a_layer():
    missing = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not missing, f"modules in no layer of tests/test_imports.py::LAYERS (place them): {', '.join(missing)}"


def test_no_import_runs_up_the_layers():
    bad = upward_imports(import_graph())
    assert not bad, "imports running up the layers: " + "; ".join(bad)


def test_scaling_is_a_leaf_library():
    """pipeline.scaling imports nothing of the package outside itself, lazily or not, and runs alone: importing
    every one of its modules loads no other pipeline module."""
    graph = import_graph()
    outside = {f"{a} -> {b}" for a, deps in graph.items() if a.startswith("pipeline.scaling")
               for b in deps if not b.startswith("pipeline.scaling")}
    assert not outside, f"pipeline.scaling imports the package: {sorted(outside)}"
    modules = sorted(m for m in graph if m.startswith("pipeline.scaling") and m != "pipeline.scaling.__main__")
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.') and not m.startswith('pipeline.scaling')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, check=True)
    assert out.stdout.strip() == "[]", out.stdout
