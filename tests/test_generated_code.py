"""Generated files are code: every value that reaches one stays inside its comment, docstring or literal.

Each case renders with a hostile string in one field (spec name, hash, names, numbers, …) and checks, with
``ast``, that the file holds exactly the imports and the one network class, with no call at import time,
and that importing it never runs the string; or that the value is refused with a NetzooError.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import tokenize
from pathlib import Path

import pytest

from cli_run import netzoo, one_line_error
from netzoo.errors import NetzooError
from netzoo.generate import generate_zoo, plan_zoo, render
from netzoo.spec import load_spec
from netzoo.zoo import import_network

TINY = Path(__file__).parent / "data" / "tiny.toml"
MARKER = "MARKER"
HOSTILE = [
    f'x\n__import__("os").system("touch {MARKER}")\n#',
    f'x\r__import__("os").system("touch {MARKER}")\r#',
    f'"""\nopen("{MARKER}", "w")\n"""',
    f"'''\nopen('{MARKER}', 'w')\n'''",
    "x\\",
    "x\x00y",
    "x\x0cy",
    f"x\u2028open('{MARKER}', 'w')",
    f"x coding: utf-7 +AAo-open('{MARKER}', 'w')+AAo-",
    f"LinearReLU_1(nn.Module): pass\nopen('{MARKER}', 'w')\nclass Y",
    f"1); open('{MARKER}', 'w'); (1",
]
IMPORTS = {"import torch", "from torch import nn", "from torchvision.models.resnet import BasicBlock",
           "from torchvision.models.resnet import BasicBlock, conv1x1"}
# Everything a generated __init__ or forward may call: layers, the block's parts, the input reshape.
CALLS = {"super", "super().__init__", "torch.flatten", "x.reshape", "BasicBlock", "conv1x1"}
NAMES = {"self", "x", "num_classes", "nn", "torch", "BasicBlock", "conv1x1", "super", "int"}


def _plans():
    """A few rendered plans covering every layer kind, BatchNorm and Dropout."""
    plans = plan_zoo(load_spec(TINY), (1, 8, 8), 10, 0)
    extra = copy.deepcopy([p for p in plans if p.family in ("Conv3d", "ResNetStyle", "Linear")])
    for plan in extra:
        plan.dropout, plan.batch_norm = 0.25, True
    return plans + extra


PLANS = _plans()
BASE = {"spec_name": "tiny.toml", "spec_hash": "0" * 64, "seed": 0, "input_shape": (1, 8, 8)}


def _call_name(node: ast.AST) -> str:
    return ast.unparse(node)


def check_only_the_network(source: str, name: str) -> None:
    """The file holds the allowed imports and one class ``name`` (docstring, __init__, forward), nothing else;
    every call sits inside a method and is a layer, the block's parts or the input reshape."""
    raw = source.encode()
    assert tokenize.detect_encoding(io.BytesIO(raw).readline)[0] == "utf-8"
    tree = ast.parse(raw)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(imports) + len(classes) == len(tree.body), ast.dump(tree)[:300]
    assert {ast.unparse(n) for n in imports} <= IMPORTS
    [cls] = classes
    assert cls.name == name and [ast.unparse(b) for b in cls.bases] == ["nn.Module"]
    assert not cls.decorator_list and not cls.keywords
    docstring, init, forward = cls.body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    assert isinstance(docstring.value.value, str)
    assert isinstance(init, ast.FunctionDef) and init.name == "__init__"
    assert isinstance(forward, ast.FunctionDef) and forward.name == "forward"
    for method in (init, forward):
        assert not method.decorator_list
        assert all(isinstance(d, ast.Constant) for d in method.args.defaults)
        for node in ast.walk(ast.Module(body=method.body, type_ignores=[])):
            if isinstance(node, ast.Call):
                called = _call_name(node.func)
                assert called in CALLS or called.startswith(("nn.", "self.")), called
            elif isinstance(node, ast.Name):
                assert node.id in NAMES, node.id
            else:
                assert isinstance(node, (ast.Module, ast.Assign, ast.Return, ast.Attribute, ast.Constant, ast.Tuple,
                                         ast.keyword, ast.Subscript, ast.Load, ast.Store, ast.Expr, ast.BinOp,
                                         ast.Mult)), type(node).__name__


def _import_in(folder: Path, source: str, name: str) -> None:
    path = folder / f"{name}.py"
    path.write_bytes(source.encode())
    import_network(path, name, sha256=hashlib.sha256(source.encode()).hexdigest())()  # builds it: __init__ runs


def _mutations(hostile: str):
    """(field, how to put ``hostile`` into it) for every value that reaches a rendered file."""
    def kw(key, value):
        return lambda plan, args: args.update({key: value})

    def attr(key, value):
        return lambda plan, args: setattr(plan, key, value)

    def layer(key, value):
        return lambda plan, args: plan.layers[0].update({key: value})

    return [
        ("spec name", kw("spec_name", hostile)), ("spec hash", kw("spec_hash", hostile)),
        ("seed", kw("seed", hostile)), ("input shape", kw("input_shape", (1, hostile, 8))),
        ("network name", attr("name", hostile)), ("family", attr("family", hostile)),
        ("activation", attr("activation", hostile)), ("view", attr("view", (hostile, 4))),
        ("classes", attr("classes", hostile)), ("dropout", attr("dropout", hostile)),
        ("batch_norm", attr("batch_norm", hostile)),
        *[(f"layer {key}", layer(key, hostile)) for key in ("type", "out", "kernel", "bias", "act")],
        ("kernel list", layer("kernel", [3, hostile])),
    ]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_in_every_field_stay_in_their_comment_or_literal_or_are_refused(hostile, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    rendered = 0
    for plan in PLANS:
        lines = render(plan, **BASE).count("\n")
        for field, put in _mutations(hostile):
            bad_plan, args = copy.deepcopy(plan), dict(BASE)
            put(bad_plan, args)
            try:
                source = render(bad_plan, **args)
            except NetzooError:
                continue  # refused: fine
            rendered += 1
            check_only_the_network(source, bad_plan.name)
            assert source.count("\n") == lines, f"{field}: the value added or removed a line"
            _import_in(tmp_path, source, bad_plan.name)
            assert not (tmp_path / MARKER).exists(), f"{field}: {hostile!r} ran when the file was imported"
    assert rendered  # the text fields (spec name, hash) render, escaped


def test_benign_values_render_files_that_pass_the_same_check():
    for plan in PLANS:
        check_only_the_network(render(plan, **BASE), plan.name)


def test_spec_path_with_a_newline_and_a_statement_is_refused_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / f'evil\n__import__("os").system("touch {MARKER}")\n#.toml'
    spec.write_text("[families.Linear]\ncounts = { ReLU = 1 }\n")
    line = one_line_error(netzoo(["generate", "--spec", spec, "--out", tmp_path / "zoo", "--quiet"],
                                 capsys, monkeypatch))
    assert "control character" in line and "rename" in line
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "zoo").exists()


def test_sweep_grid_whose_spec_string_holds_a_newline_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f'evil\n__import__("os").system("touch {MARKER}")\n#.toml'
    (tmp_path / name).write_text("[families.Linear]\ncounts = { ReLU = 1 }\n")
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nname = "g"\nspec = "evil\\n__import__(\\"os\\").system(\\"touch MARKER\\")\\n#.toml"\n'
                    '[base]\nepochs = 1\n[[recipes]]\nname = "baseline"\n')
    ran = netzoo(["sweep", grid, "--zoo", tmp_path / "unused", "--dataset", "digits", "--results",
                  tmp_path / "results", "--quiet", "--workers", "1", "--device", "cpu"], capsys, monkeypatch)
    assert "control character" in one_line_error(ran)
    assert not (tmp_path / MARKER).exists()


def test_generated_zoo_files_pass_the_check(tmp_path):
    manifest = generate_zoo(TINY, out=tmp_path, progress=False, dropout=0.1, batch_norm=True)
    for name in manifest["network"]:
        check_only_the_network((tmp_path / f"{name}.py").read_text(), name)
