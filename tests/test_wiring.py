"""How the modules are wired, checked from the source with ``ast`` (issue 13's contract; STYLE.md, "Wiring").

Imports only go down: every module of netzoo/ and analysis/ has a layer below, and an import (at module level or
inside a function: both count) may only reach a module of the same layer or a lower one. No module of netzoo/
imports analysis/ except netzoo/report.py and netzoo/cli.py. No import cycle anywhere in netzoo/ or analysis/.
Each helper that issue 13 found written several times is defined once. A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("netzoo", "analysis")

# The layers, from the bottom (STYLE.md, "Wiring: imports only go down"). A module may import its own layer and
# the layers below it, never one above.
LAYERS = {
    # 0: foundations: errors, paths, the key's file name, table schemas, atomic files, devices
    0: ["netzoo", "netzoo.errors", "netzoo.paths", "netzoo.keys", "netzoo.schema", "netzoo.files", "netzoo.devices",
        "netzoo.names"],
    # 1: what the trainer and everything above read and write: zoo, datasets, results, claims, lenses, recipe,
    #    spec, generate, compact files, and their helpers (idx files, costs, fusion of runs, CUDA graphs, completeness)
    1: ["netzoo.idx", "netzoo.datasets", "netzoo.results", "netzoo.claims", "netzoo.lenses", "netzoo.recipe",
        "netzoo.spec", "netzoo.generate", "netzoo.render", "netzoo.families", "netzoo.zoo", "netzoo.measure",
        "netzoo.fuse", "netzoo.fuse_optim", "netzoo.graphs", "netzoo.completeness", "netzoo.weights", "netzoo.compact"],
    # 2: ONE trainer, and the rows of a trained run
    2: ["netzoo.train", "netzoo.write"],
    # 3: jobs / plan (what to train): the job and its keys, shards, the folder's identity, which runs share a group
    3: ["netzoo.jobs", "netzoo.shards", "netzoo.identity", "netzoo.grouping"],
    # 4: executors (where tasks run): they call the trainer, the trainer never calls them
    4: ["netzoo.executors", "netzoo.executors.tasks", "netzoo.executors.local", "netzoo.executors.ray"],
    # 5: commands' libraries: run a job, sweep, benchmarks, status, verify, compact; analysis (reads results
    #    only through netzoo.results), and the report that assembles it
    5: ["netzoo.runner", "netzoo.sweep", "netzoo.benchmarks", "netzoo.benchmarks.study", "netzoo.benchmarks.volume",
        "netzoo.benchmarks.fusion", "netzoo.benchmarks.gpu_check", "netzoo.status", "netzoo.verify",
        "netzoo.export", "netzoo.report", "analysis"],
    # 6: the command line
    6: ["netzoo.cli"],
}
LAYER = {module: layer for layer, modules in LAYERS.items() for module in modules}
MAY_IMPORT_ANALYSIS = {"netzoo.report", "netzoo.cli"}


def _modules() -> dict[str, Path]:
    """Every module of netzoo/ and analysis/ by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    """The layer of a module: its own entry, else analysis's for analysis modules."""
    if module in LAYER:
        return LAYER[module]
    if module.startswith("analysis"):
        return LAYER["analysis"]
    raise KeyError(module)


def _imports(module: str) -> set[str]:
    """The netzoo/analysis modules ``module`` imports anywhere in its source (module level or in a function)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from netzoo import results
    return {name for name in found if name in MODULES and name != module}


EDGES = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m not in LAYER and not m.startswith("analysis")]
    assert not missing, f"give these modules a layer in tests/test_wiring.py: {missing}"


def test_imports_only_go_down():
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, targets in EDGES.items() for b in sorted(targets) if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_no_module_of_netzoo_imports_analysis_but_the_report_and_the_cli():
    wrong = [f"{a} imports {b}" for a, targets in EDGES.items() if a.startswith("netzoo")
             and a not in MAY_IMPORT_ANALYSIS for b in targets if b.startswith("analysis")]
    assert not wrong, wrong


def test_there_is_no_import_cycle():
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in EDGES[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_analysis_reads_results_only_through_netzoo_results():
    readers = []
    for module, path in MODULES.items():
        if not module.startswith("analysis"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                readers += [f"{module} imports {n}" for n in names if n.startswith(("pyarrow.parquet",
                                                                                        "pyarrow.dataset"))]
            elif isinstance(node, ast.Attribute) and node.attr in ("read_parquet", "read_table"):
                readers.append(f"{module} calls {node.attr} (line {node.lineno})")
    assert not readers, readers


# Helpers issue 13 found written several times, each now with one definition in netzoo/ + analysis/.
HELPERS = ["natural_key", "matching", "select_networks", "read_manifest", "manifest_rows", "load_network",
           "import_network", "device_name", "sync", "parse_devices", "predictions_table", "write_run", "provenance",
           "key_name", "key_of_name", "atomic_write", "atomic_write_text", "write_temp", "cached_dataset", "evaluate",
           "train_runs", "run_tasks", "ensemble_predictions", "completeness_text"]


def _definitions() -> Counter:
    """How many times each function name is defined (at module level or in a class) in netzoo/ + analysis/."""
    names: Counter = Counter()
    for path in MODULES.values():
        tree = ast.parse(path.read_text())
        bodies = [tree.body] + [node.body for node in tree.body if isinstance(node, ast.ClassDef)]
        for body in bodies:
            names.update(node.name for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


# Two jobs under one name, each its module's contract: netzoo.zoo.load_network(zoo_dir, name) builds a zoo's
# untrained network, netzoo.results.load_network(results_dir, network, …) a trained run's (issue 14).
DEFINED_TWICE = {"load_network": 2}


@pytest.mark.parametrize("helper", HELPERS)
def test_each_helper_is_defined_once(helper):
    times = DEFINED_TWICE.get(helper, 1)
    assert _definitions()[helper] == times, f"{helper} is defined {_definitions()[helper]} times"


def test_no_second_natural_sort_train_size_or_device_helper_under_another_name():
    suspects = {name: n for name, n in _definitions().items()
                if any(word in name for word in ("natural", "train_size", "device_name", "sync", "read_manifest",
                                                 "manifest_rows", "predictions_table", "claim_name", "part_name"))}
    allowed = {"natural_key", "device_name", "sync", "read_manifest", "_read_manifest", "manifest_rows", "_train_size",
               "predictions_table", "part_name"}
    assert set(suspects) <= allowed and all(n == 1 for n in suspects.values()), suspects


def test_only_netzoo_files_makes_temporary_names():
    """The tmp-then-rename write has one home (netzoo.files); netzoo.generate's own is the other helper's to move."""
    makers = []
    for module, path in MODULES.items():
        if module in ("netzoo.files", "netzoo.generate"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(".tmp-") \
                    and node.value != ".tmp-download-":
                makers.append(f"{module}: {node.value!r} (line {node.lineno})")
    assert not makers, makers


def test_every_report_module_takes_tables_and_results_dir():
    from netzoo.report import REPORT_MODULES

    for name in REPORT_MODULES:
        if name not in MODULES:
            continue
        tree = ast.parse(MODULES[name].read_text())
        (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "report_sections"]
        args = [a.arg for a in func.args.args]
        assert args == ["tables", "results_dir", "select_on"] and len(func.args.defaults) == 2, (name, args)


def test_the_architecture_doc_names_every_module_and_its_layer():
    """docs/architecture.md's module map stays true: every module is in it (issue 13: it had left modules out)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for module, path in MODULES.items():
        rel = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py":
            continue
        shown = rel if rel.startswith("netzoo/") else path.name
        if shown not in text:
            missing.append(rel)
    assert not missing, f"add these modules to docs/architecture.md's module map: {missing}"
