"""Render a zoo: seeded, shape-aware sampling of every network of a spec; render templates/; check each
rendered file (import, build, forward pass on the target shape); measure its static costs; write the manifest.

    generate_zoo("default", dataset="mnist")  ->  zoo/mnist/<Name>.py + zoo/mnist/manifest.parquet

The same spec + seed + input shape gives byte-identical files and manifest: every random draw comes from a
random.Random seeded by (seed, family, activation), and nothing else (time, paths, dict order) enters them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import keyword
import math
import os
import random
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import pyarrow.parquet as pq
import torch
from markupsafe import Markup

from netzoo import schema
from netzoo.datasets import dataset_info
from netzoo.errors import GenerationError, NetzooError, ShapeMismatchError, SpecError
from netzoo.measure import static_costs
from netzoo.names import check_network_name
from netzoo.paths import templates_dir
from netzoo.spec import ACTIVATIONS, MAX_CLASSES, MAX_PIXELS, FamilySpec, ZooSpec, check_seed, load_spec

TEMPLATES = {"Basic": "basic.py.j2", "Linear": "linear.py.j2", "ResNetStyle": "resnet_style.py.j2",
             **{f"Conv{n}d": "conv.py.j2" for n in (1, 2, 3)},
             **{f"Conv{n}dThenLinear": "conv_then_linear.py.j2" for n in (1, 2, 3)}}
# The nn module of each activation (a None cell's, where a layer needs one: nn.Identity).
ACTIVATION_MODULES = {"None": "Identity", "ReLU": "ReLU", "SELU": "SELU", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
CONV_DIMS = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}
STEM_SIDE = 28  # ResNetStyle's stem_kernel range is given for a 28-pixel side and scaled to the input's


# --- the family's input: how forward views the (N, C, H, W) input -------------------------------------
def family_input(family: str, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The shape (without N) that a family's forward views its input as; one rule per family.

    Linear, Basic: a flat vector of C*H*W. Conv2d, ResNetStyle: the image (C, H, W) as is.
    Conv1d: the C*H*W pixels as 16 channels x (C*H*W/16) steps (the study's MNIST 16x49; digits 16x4;
    3x32x32 16x192), or C channels x H*W steps when 16 does not divide them.
    Conv3d: the same 16 x P split as a one-channel volume 1 x 16 x a x b, with a*b = P and a the largest
    divisor of P not above sqrt(P) (MNIST 1x16x7x7 as the study; digits 1x16x2x2; 3x32x32 1x16x12x16),
    or 1 x C x H x W when 16 does not divide the pixels.
    """
    c, h, w = input_shape
    pixels = c * h * w
    base = family.removesuffix("ThenLinear")
    if base in ("Linear", "Basic"):
        return (pixels,)
    if base in ("Conv2d", "ResNetStyle"):
        return (c, h, w)
    folds = pixels % 16 == 0 and pixels > 16
    if base == "Conv1d":
        return (16, pixels // 16) if folds else (c, h * w)
    if base == "Conv3d":
        if not folds:
            return (1, c, h, w)
        p = pixels // 16
        a = max(d for d in range(1, math.isqrt(p) + 1) if p % d == 0)
        return (1, 16, a, p // a)
    raise ValueError(f"unknown family {family!r}")


# --- sampled plan -> rendered steps -----------------------------------------------------------------
@dataclass
class Plan:
    """Everything sampled for one network: enough to render it again, stored as JSON in ``hparams``."""

    name: str
    family: str
    activation: str
    view: tuple[int, ...]     # the family's input, without N
    layers: list[dict]        # {"type", "out", "kernel", "bias", "act"} per weight layer (BasicBlock: one entry)
    dropout: float = 0.0
    batch_norm: bool = False
    classes: int = 10

    def hparams(self) -> dict[str, Any]:
        return {"view": list(self.view), "layers": self.layers, "dropout": self.dropout,
                "batch_norm": self.batch_norm}


@dataclass(frozen=True)
class Step:
    """One step of forward, as data for the template macro of its ``kind`` (templates/_layers.py.j2).

    Kinds: input, Linear, Conv, BasicBlock, BatchNorm, activation, Dropout, flatten, output. ``index`` is the
    weight layer the step belongs to (fc2, bn2, act2, drop2); ``shape`` the tensor after it, without N.
    """

    kind: str
    shape: tuple[int, ...]
    index: int = 0
    inputs: int = 0                   # in features / channels (BatchNorm: its channels)
    out: int = 0                      # out features / channels
    last: bool = False                # the last weight layer: its out is num_classes
    kernel: int | tuple[int, ...] = 0
    bias: bool = False
    dims: int = 0                     # Conv{dims}d, BatchNorm{dims}d
    p: float = 0.0                    # Dropout probability
    activation: str = "None"          # the cell's activation (BasicBlock)
    module: str = "Identity"          # the activation's nn module


def _conv_out(shape: tuple[int, ...], out: int, kernel) -> tuple[int, ...]:
    kernels = kernel if isinstance(kernel, list) else [kernel] * (len(shape) - 1)
    return (out, *(s - k + 1 for s, k in zip(shape[1:], kernels)))


def build_steps(plan: Plan) -> list[Step]:
    """The steps of forward (and the layers __init__ builds for them), with the shape after each."""
    shape = plan.view
    module = ACTIVATION_MODULES[plan.activation]
    steps = [Step("input", shape)]
    n_weights = len(plan.layers)
    for i, layer in enumerate(plan.layers, start=1):
        kind, out, bias = layer["type"], layer["out"], layer["bias"]
        last = i == n_weights
        if kind == "Linear":
            if len(shape) > 1:
                shape = (math.prod(shape),)
                steps.append(Step("flatten", shape))
            steps.append(Step("Linear", (out,), i, shape[0], out, last, bias=bias))
            shape = (out,)
        elif kind == "BasicBlock":
            steps.append(Step("BasicBlock", (out, *shape[1:]), i, shape[0], out, activation=plan.activation,
                              module=module))
            shape = (out, *shape[1:])
            continue
        else:  # Conv1d, Conv2d, Conv3d
            kernel = layer["kernel"]
            new = _conv_out(shape, out, kernel)
            kernel = tuple(kernel) if isinstance(kernel, list) else kernel
            steps.append(Step("Conv", new, i, shape[0], out, last, kernel, bias, dims=CONV_DIMS[kind]))
            shape = new
        if last:
            break
        if plan.batch_norm:
            steps.append(Step("BatchNorm", shape, i, shape[0], dims={1: 1, 2: 1, 3: 2, 4: 3}[len(shape)]))
        if layer["act"]:
            steps.append(Step("activation", shape, i, module=module))
            if plan.dropout > 0:
                steps.append(Step("Dropout", shape, i, p=plan.dropout))
    if len(shape) > 1:  # pure conv families end with (classes, 1, …)
        shape = (math.prod(shape),)
        steps.append(Step("flatten", shape))
    steps.append(Step("output", shape))
    return steps


def describe_plan(plan: Plan) -> str:
    """One docstring line: the weight layers, where the activation sits, the shapes in and out."""
    kinds = [layer["type"] for layer in plan.layers]
    parts = []
    for kind in dict.fromkeys(kinds):
        n = kinds.count(kind)
        parts.append(f"{n} {kind}{'s' if n > 1 else ''}" if kind == "BasicBlock" else f"{n} {kind}")
    acts = [i for i, layer in enumerate(plan.layers, 1) if layer["act"]]
    if plan.family == "Basic":
        where = "no activation"
    elif plan.activation == "None":
        where = "no activation" + (" (blocks use Identity)" if "BasicBlock" in kinds else "")
    else:
        listed = ", ".join(map(str, acts[:-1])) + f" and {acts[-1]}" if len(acts) > 1 else "".join(map(str, acts))
        where = f"{plan.activation} after layer{'s' if len(acts) != 1 else ''} {listed}" \
            if acts else f"{plan.activation} inside the blocks only"
        if "BasicBlock" in kinds and acts:
            where += " and inside the blocks"
    hidden = len(plan.layers) > 1
    extras = (["BatchNorm after each hidden layer"] if plan.batch_norm and hidden else []) + \
             ([f"Dropout({plan.dropout}) after each activation"] if plan.dropout > 0 and acts else [])
    return f"{' + '.join(parts)}, {'; '.join([where, *extras])}."


# --- sampling ------------------------------------------------------------------------------------
def _cell_rng(seed: int, family: str, activation: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{family}/{activation}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _acts(rng: random.Random, n: int, activation: str, p: float) -> list[bool]:
    """Activation after each of n weight layers: probability p, never after the last, at least one in an
    activation cell (when there is a hidden layer), none in a None cell."""
    if activation == "None" or n < 2:
        return [False] * n
    flags = [rng.random() < p for _ in range(n - 1)]
    if not any(flags):
        flags[rng.randrange(n - 1)] = True
    return flags + [False]


def _bias(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def _widths(rng: random.Random, n_hidden: int, low: int, high: int) -> list[int]:
    """First hidden width uniform in [low, high], each next uniform in [low, previous] (the study's rule)."""
    widths, top = [], high
    for _ in range(n_hidden):
        top = rng.randint(min(low, top), top)
        widths.append(top)
    return widths


def _kernels(rng: random.Random, dims: tuple[int, ...], n: int, low: int, high: int) -> tuple[list[int], tuple]:
    """n kernel sides (square/cubic), each uniform in [low, min(high, what is left)], leaving room for the rest."""
    sides = []
    dims = tuple(dims)
    for j in range(n):
        room = min(dims) - (n - 1 - j) * (low - 1)
        k = rng.randint(low, min(high, room))
        sides.append(k)
        dims = tuple(d - k + 1 for d in dims)
    return sides, dims


def sample_plan(name: str, family: str, activation: str, fam: FamilySpec, rng: random.Random,
                input_shape: tuple[int, int, int], classes: int, depth: int | None,
                grid_point: tuple[int, int] | None = None) -> Plan:
    """Draw one network of a cell. ``depth`` (weight layers) is chosen by the caller to spread depths evenly."""
    r = fam.ranges
    view = family_input(family, input_shape)
    layers: list[dict] = []
    p_bias, p_act = fam.bias_probability, fam.activation_probability
    if family == "Linear":
        if grid_point:
            hidden, width = grid_point
            widths = [width] * hidden
        else:
            widths = _widths(rng, depth - 1, *r["width"])
        layers = [{"type": "Linear", "out": w, "kernel": 0, "bias": _bias(rng, p_bias)} for w in widths + [classes]]
    elif family in ("Conv1d", "Conv2d", "Conv3d"):
        channels = [rng.randint(*r["channels"]) for _ in range(depth - 1)]
        sides, left = _kernels(rng, view[1:], depth - 1, r["kernel"][0], r["kernel"][1])
        last_kernel = left[0] if len(left) == 1 else list(left)  # the last conv covers what remains
        layers = [{"type": family, "out": c, "kernel": k, "bias": _bias(rng, p_bias)} for c, k in zip(channels, sides)]
        layers.append({"type": family, "out": classes, "kernel": last_kernel, "bias": _bias(rng, p_bias)})
    elif family.endswith("ThenLinear"):
        kind = family.removesuffix("ThenLinear")
        n_conv = rng.randint(r["conv_layers"][0], min(r["conv_layers"][1], depth - 1))
        channels = [rng.randint(*r["channels"]) for _ in range(n_conv)]
        sides, _ = _kernels(rng, view[1:], n_conv, *r["kernel"])
        widths = _widths(rng, depth - n_conv - 1, *r["width"])
        layers = [{"type": kind, "out": c, "kernel": k, "bias": _bias(rng, p_bias)} for c, k in zip(channels, sides)]
        layers += [{"type": "Linear", "out": w, "kernel": 0, "bias": _bias(rng, p_bias)} for w in widths + [classes]]
    elif family == "ResNetStyle":
        side = min(view[1:])
        k_low, k_high = _stem_kernel_range(r["stem_kernel"], side)
        stem_c = rng.randint(*r["stem_channels"])
        stem_k = rng.randint(k_low, min(k_high, side - r["convs"][1] * (r["kernel"][0] - 1)))
        n_blocks = depth  # the caller spreads the block count evenly
        n_convs = rng.randint(*r["convs"])
        channels = [rng.randint(*r["channels"]) for _ in range(n_convs)]
        dims = tuple(d - stem_k + 1 for d in view[1:])
        sides, _ = _kernels(rng, dims, n_convs, *r["kernel"])
        widths = _widths(rng, rng.randint(*r["linears"]) - 1, *r["width"])
        layers = [{"type": "Conv2d", "out": stem_c, "kernel": stem_k, "bias": _bias(rng, p_bias)}]
        layers += [{"type": "BasicBlock", "out": stem_c, "kernel": 3, "bias": False} for _ in range(n_blocks)]
        layers += [{"type": "Conv2d", "out": c, "kernel": k, "bias": _bias(rng, p_bias)} for c, k in zip(channels, sides)]
        layers += [{"type": "Linear", "out": w, "kernel": 0, "bias": _bias(rng, p_bias)} for w in widths + [classes]]
    else:
        raise SpecError(f"unknown family {family!r}")
    flags = _acts(rng, len(layers), activation, p_act)
    for layer, flag in zip(layers, flags):
        layer["act"] = flag and layer["type"] != "BasicBlock"
    if activation != "None" and family == "ResNetStyle":
        for layer in layers:
            if layer["type"] == "BasicBlock":
                layer["act"] = False  # the block applies the activation itself
    return Plan(name=name, family=family, activation=activation, view=view, layers=layers,
                dropout=fam.dropout, batch_norm=fam.batch_norm, classes=classes)


def _stem_kernel_range(stem_kernel: tuple[int, int], side: int) -> tuple[int, int]:
    """The stem kernel range given for a 28 side, scaled to this side (digits' 8: 1-20 -> 1-6)."""
    if side == STEM_SIDE:
        return stem_kernel
    low = max(1, round(stem_kernel[0] * side / STEM_SIDE))
    return low, max(low, round(stem_kernel[1] * side / STEM_SIDE))


def basic_plan(input_shape: tuple[int, int, int], classes: int, dropout: float = 0.0,
               batch_norm: bool = False) -> Plan:
    """The study's Basic: flat input -> one Linear to the classes (with bias) -> LogSoftmax.

    It has no hidden layer, so no Dropout or BatchNorm layer; ``dropout``/``batch_norm`` only record the zoo's
    setting in its manifest row, so that every row of a zoo agrees.
    """
    return Plan(name="Basic", family="Basic", activation="None", view=family_input("Basic", input_shape),
                layers=[{"type": "Linear", "out": classes, "kernel": 0, "bias": True, "act": False}],
                dropout=dropout, batch_norm=batch_norm, classes=classes)


def check_classes(classes: Any) -> int:
    """``classes`` when it is an integer in [2, 10000] (one class makes every network's output constant)."""
    if not (_is_int(classes) and 2 <= classes <= MAX_CLASSES):
        raise SpecError(f"classes: {classes!r} is not allowed; give 2 <= classes <= {MAX_CLASSES}.")
    return classes


# --- feasibility: a range no network of this input shape can satisfy ----------------------------------
def check_feasible(spec: ZooSpec, input_shape: tuple[int, int, int], classes: int) -> None:
    """Raise SpecError naming the file and key when a family's ranges cannot fit this input shape."""
    where = spec.path.name if spec.name == spec.path.stem else spec.name
    shape_text = "x".join(map(str, input_shape))
    check_classes(classes)
    for family, fam in spec.families.items():
        if not any(fam.counts.values()):
            continue
        r, key = fam.ranges, f"families.{family}"
        view = family_input(family, input_shape)
        side = min(view[1:]) if len(view) > 1 else 0
        if family.endswith("ThenLinear"):
            if r["depth"][0] < 2:
                raise SpecError(f"{where}: {key}.depth: {list(r['depth'])} allows depth 1, but a {family} needs "
                                f"a conv and a Linear; give depth >= 2.")
            if r["conv_layers"][0] > r["depth"][0] - 1:
                raise SpecError(f"{where}: {key}.conv_layers: {list(r['conv_layers'])} leaves no Linear layer at "
                                f"depth {r['depth'][0]}; allowed: conv_layers low <= {r['depth'][0] - 1}.")
            convs = min(r["conv_layers"][1], r["depth"][1] - 1)
        elif family.startswith("Conv"):
            convs = r["depth"][1] - 1
        elif family == "ResNetStyle":
            convs = r["convs"][1]
            k_low, _ = _stem_kernel_range(r["stem_kernel"], side)
            room = side - convs * (r["kernel"][0] - 1)
            if k_low > room:
                raise SpecError(f"{where}: {key}.stem_kernel: {list(r['stem_kernel'])} (scaled to {k_low} for the "
                                f"{side}-pixel side of a {shape_text} input) leaves no room; allowed: a low end "
                                f"that scales to at most {room} (on a 28 side: <= {room * STEM_SIDE // side}).")
            side = side - k_low + 1
        else:
            continue
        low = r["kernel"][0]
        if convs > 0 and side < convs * (low - 1) + 1:
            most = (side - 1) // convs + 1
            raise SpecError(f"{where}: {key}.kernel: {list(r['kernel'])}: a side of {side} (a {shape_text} input, "
                            f"{family} input {'x'.join(map(str, view))}) cannot take {convs} convs of kernel >= {low}; "
                            f"allowed: kernel low <= {most}, or fewer layers, or a larger input.")


# --- rendering: every value that reaches a file is checked, then escaped for where it lands -----------
class Code(str):
    """Text a filter has made safe for where it lands (|text, |ident, |join); any operation on it gives a
    plain str again, which the environment refuses: a value can only be escaped, never composed around."""


def _literal(value: Any) -> Markup:
    """The environment's finalize: what ``{{ … }}`` may print. Macro output (Markup) and filtered text (Code) as
    they are; int, bool and finite float as Python literals; anything else (a raw str, a list, None) stops the
    rendering, so a field a template forgets to filter cannot reach the file."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, Code):
        return Markup(value)
    if isinstance(value, (bool, int)):
        return Markup(repr(value))
    if isinstance(value, float) and math.isfinite(value):
        return Markup(repr(value))
    raise GenerationError(f"template value {value!r:.60} ({type(value).__name__}) has no filter; "
                          f"render text with |text and names with |ident (templates/_layers.py.j2).")


# A comment naming a codec on the first two lines changes how Python decodes the file (PEP 263: utf-7 turns
# '+AAo-' into a newline): text never holds one.
_CODING = re.compile(r"(coding)([:=])")


def _text(value: Any) -> Code:
    """One line of text that stays inside a comment, a docstring or a double-quoted string: backslashes and
    double quotes escaped, every non-printable character (newline, NUL, U+2028, …) written as its escape."""
    out = []
    for ch in str(value):
        if ch in '\\"':
            out.append("\\" + ch)
        else:
            out.append(ch if ch.isprintable() else ascii(ch)[1:-1])
    text = "".join(out)
    return Code(_CODING.sub(lambda m: f"{m.group(1)}\\x{ord(m.group(2)):02x}", text))


def _ident(value: Any) -> Code:
    """A plain ASCII identifier (a class, attribute or nn module name), else GenerationError."""
    if not (isinstance(value, str) and value.isascii() and value.isidentifier() and not keyword.iskeyword(value)):
        raise GenerationError(f"{value!r:.60} is not a Python name; a template may only print names with |ident.")
    return Code(value)


def _join(items: Any, sep: str = "") -> Code:
    """Jinja's join, strict: each item through finalize (numbers, filtered text), a separator of ' ,x*' only."""
    if not re.fullmatch(r"[ ,x*]*", sep):
        raise GenerationError(f"join separator {sep!r} is not allowed in a template; use ', ' or 'x'.")
    return Code(sep.join(_literal(item) for item in items))


def _environment() -> jinja2.Environment:
    """Jinja over templates/, escaping like autoescape does for HTML but for Python: ``{{ … }}`` prints only
    numbers, macro output and filtered values (see _literal); ``|safe`` is gone and ``|join`` is strict."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=True, finalize=_literal)
    env.filters.update(text=_text, ident=_ident, join=_join)
    del env.filters["safe"]
    return env


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_plan(plan: Plan) -> None:
    """GenerationError (or NetworkNameError) unless every value of ``plan`` has its type and range: a plan
    built by hand or read back from a manifest renders only when it could have been sampled."""
    check_network_name(plan.name)
    problems = []
    if plan.family not in TEMPLATES:
        problems.append(f"family {plan.family!r:.60}")
    if plan.activation not in ACTIVATION_MODULES:
        problems.append(f"activation {plan.activation!r:.60}")
    if not _is_int(plan.classes, 2):
        problems.append(f"classes {plan.classes!r:.60}")
    if not (isinstance(plan.view, tuple) and plan.view and all(_is_int(v, 1) for v in plan.view)):
        problems.append(f"view {plan.view!r:.60}")
    if not (isinstance(plan.dropout, (int, float)) and not isinstance(plan.dropout, bool)
            and 0.0 <= plan.dropout < 1.0):
        problems.append(f"dropout {plan.dropout!r:.60}")
    if not isinstance(plan.batch_norm, bool):
        problems.append(f"batch_norm {plan.batch_norm!r:.60}")
    for i, layer in enumerate(plan.layers, start=1):
        kernel = layer.get("kernel")
        if (layer.get("type") not in (*CONV_DIMS, "Linear", "BasicBlock") or not _is_int(layer.get("out"), 1)
                or not isinstance(layer.get("bias"), bool) or not isinstance(layer.get("act"), bool)
                or not (_is_int(kernel) or isinstance(kernel, list) and all(_is_int(k, 1) for k in kernel))):
            problems.append(f"layer {i} {layer!r:.80}")
    if not plan.layers:
        problems.append("no layers")
    if problems:
        raise GenerationError(f"{plan.name}: the plan cannot be rendered: {'; '.join(problems)}.")


def _sampled_text(plan: Plan) -> str:
    layers = plan.layers
    parts = [f"layers={[layer['type'] for layer in layers]}", f"widths={[layer['out'] for layer in layers]}"]
    if any(layer["kernel"] for layer in layers):
        parts.append(f"kernel_sizes={[layer['kernel'] for layer in layers]}")
    parts += [f"biases={[layer['bias'] for layer in layers]}", f"activations_after={[layer['act'] for layer in layers]}"]
    if plan.dropout and len(layers) > 1:
        parts.append(f"dropout={plan.dropout}")
    if plan.batch_norm and len(layers) > 1:
        parts.append("batch_norm=True")
    return ", ".join(parts)


def render(plan: Plan, spec_name: str, spec_hash: str, seed: int, input_shape: tuple[int, int, int],
           env: jinja2.Environment | None = None) -> str:
    """The Python source of one network, rendered from its family's template.

    Raises GenerationError when a value has the wrong type or range (see check_plan); text (spec name, hash)
    is escaped into one line by the templates' |text filter.
    """
    check_plan(plan)
    if not _is_int(seed) or not (isinstance(input_shape, tuple) and len(input_shape) == 3
                                 and all(_is_int(v, 1) for v in input_shape)):
        raise GenerationError(f"{plan.name}: seed {seed!r:.40} and input shape {input_shape!r:.60} must be "
                              f"non-negative integers and three positive integers.")
    env = env or _environment()
    steps = build_steps(plan)
    c, h, w = input_shape
    template = TEMPLATES[plan.family]
    return env.get_template(template).render(
        name=plan.name, family=plan.family, template=template, spec=spec_name, spec_hash=spec_hash, seed=seed,
        input_shape=input_shape, classes=plan.classes, sampled=_sampled_text(plan), view=plan.view,
        pixels=c * h * w, docstring=f"{describe_plan(plan)} (N, {c}, {h}, {w}) -> (N, {plan.classes}) "
                                    f"log-probabilities.",
        steps=steps, block_import=any(s.kind == "BasicBlock" for s in steps),
        downsample=any(s.kind == "BasicBlock" and s.inputs != s.out for s in steps))


def arch_id(plan: Plan) -> str:
    """Stable hash of the canonical architecture (no name, no cell index): equal ids are the same network."""
    uses_activation = any(layer["act"] for layer in plan.layers) or any(
        layer["type"] == "BasicBlock" for layer in plan.layers)
    canonical = {"view": list(plan.view), "classes": plan.classes, "layers": plan.layers,
                 "activation": plan.activation if uses_activation else None,
                 "dropout": plan.dropout if any(layer["act"] for layer in plan.layers) else 0.0,
                 "batch_norm": plan.batch_norm and len(plan.layers) > 1}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_row(plan: Plan, costs: dict[str, int], spec: ZooSpec, seed: int,
                 input_shape: tuple[int, int, int], file_sha256: str) -> dict[str, Any]:
    """One manifest row (schema.MANIFEST) of a rendered network whose file's bytes hash to ``file_sha256``."""
    layers = plan.layers
    kernel_side = [max(layer["kernel"]) if isinstance(layer["kernel"], list) else layer["kernel"] for layer in layers]
    blocks_act = plan.activation != "None"
    return {
        "network": plan.name, "family": plan.family, "activation": plan.activation,
        "depth": sum(2 if layer["type"] == "BasicBlock" else 1 for layer in layers),
        "arch_id": arch_id(plan), "file": f"{plan.name}.py", "file_sha256": file_sha256,
        "template": TEMPLATES[plan.family],
        "input_shape": "x".join(map(str, input_shape)), "classes": plan.classes, **costs,
        "layer_types": [layer["type"] for layer in layers], "widths": [layer["out"] for layer in layers],
        "kernel_sizes": kernel_side, "biases": [layer["bias"] for layer in layers],
        "activations_after": [blocks_act if layer["type"] == "BasicBlock" else layer["act"] for layer in layers],
        "dropout": plan.dropout, "batch_norm": plan.batch_norm,
        "hparams": json.dumps(plan.hparams(), sort_keys=True), "spec": spec.name, "spec_hash": spec.sha256,
        "seed": seed,
    }


def check_network(model: torch.nn.Module, name: str, input_shape: tuple[int, int, int], classes: int) -> None:
    """Forward a batch of two on the target shape: (2, classes) finite log-probabilities, else GenerationError."""
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        out = model(x)
    if tuple(out.shape) != (2, classes):
        raise GenerationError(f"{name}: forward on (2, {', '.join(map(str, input_shape))}) gave shape "
                              f"{tuple(out.shape)}, expected (2, {classes}). The template or sampler is wrong.")
    if not torch.isfinite(out).all() or not torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-4):
        raise GenerationError(f"{name}: forward did not return finite log-probabilities (rows of exp must sum to 1).")


def plan_zoo(spec: ZooSpec, input_shape: tuple[int, int, int], classes: int, seed: int) -> list[Plan]:
    """Every network of a spec, sampled: Basic first, then each family's cells in canonical activation order."""
    plans = [basic_plan(input_shape, classes, spec.dropout, spec.batch_norm)] if spec.basic else []
    for family, fam in spec.families.items():
        for activation in ACTIVATIONS:
            count = fam.counts.get(activation, 0)
            if not count:
                continue
            rng = _cell_rng(seed, family, activation)
            if fam.grid:
                jobs = [(None, point) for point in fam.grid for _ in range(count)]
            else:
                key = "blocks" if family == "ResNetStyle" else "depth"
                low, high = fam.ranges[key]
                # spread evenly over depths (ResNetStyle: over block counts): low, low+1, …, high, low, …
                jobs = [(low + j % (high - low + 1), None) for j in range(count)]
            for i, (depth, point) in enumerate(jobs, start=1):
                plans.append(sample_plan(f"{family}{activation}_{i}", family, activation, fam, rng,
                                         input_shape, classes, depth, point))
    return plans


def _resolve_target(dataset, input_shape, classes) -> tuple[str, tuple[int, int, int], int]:
    if dataset is not None and input_shape is not None:
        info = dataset_info(dataset)
        if tuple(input_shape) != info.input_shape:
            raise ShapeMismatchError(f"--dataset {dataset} gives {'x'.join(map(str, info.input_shape))} inputs, "
                                     f"not {'x'.join(map(str, input_shape))}; give one of --dataset or --input-shape.")
    if classes is not None:
        check_classes(classes)
    if input_shape is None:
        info = dataset_info(dataset or "digits")
        return info.name, info.input_shape, info.classes if classes is None else classes
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeMismatchError(f"input shape {input_shape!r} is not CxHxW with positive sides, e.g. (1, 28, 28).")
    if math.prod(shape) > MAX_PIXELS:
        raise ShapeMismatchError(f"input shape {'x'.join(map(str, shape))} has {math.prod(shape)} pixels; allowed: "
                                 f"at most {MAX_PIXELS} (e.g. 3x1024x1024).")
    return (dataset or "x".join(map(str, shape))), shape, 10 if classes is None else classes


def generate_zoo(spec: str | Path = "default", dataset: str | None = None, input_shape=None, classes=None,
                 seed: int | None = None, out: str | Path | None = None, progress: bool = True,
                 dropout: float | None = None, batch_norm: bool | None = None,
                 networks: Collection[str] | None = None) -> pd.DataFrame:
    """Render every network of ``spec`` into ``out/<Name>.py`` and ``out/manifest.parquet``; return the manifest.

    Each rendered file is imported, built and run forward on the target shape before its costs are measured;
    a failure raises GenerationError naming the network. ``dropout``/``batch_norm`` override the spec's.
    ``networks``: render only these (named as in the whole zoo, with the same architectures); a name the
    spec does not make raises SpecError.
    """
    from dataclasses import replace

    zoo_spec = load_spec(spec)
    label, shape, n_classes = _resolve_target(dataset, input_shape, classes)
    seed = zoo_spec.seed if seed is None else check_seed(seed, "seed")
    overrides = {}
    if dropout is not None:
        if not 0.0 <= float(dropout) < 1.0:
            raise SpecError(f"dropout={dropout!r} is not allowed; give a probability in [0, 1).")
        overrides["dropout"] = float(dropout)
    if batch_norm is not None:
        overrides["batch_norm"] = bool(batch_norm)
    if overrides:
        zoo_spec = replace(zoo_spec, families={f: replace(fam, **overrides) for f, fam in zoo_spec.families.items()},
                           **overrides)
    check_feasible(zoo_spec, shape, n_classes)
    out = Path(out) if out is not None else Path("zoo") / label

    plans = plan_zoo(zoo_spec, shape, n_classes, seed)
    if networks is not None:
        wanted = set(networks)
        if not wanted:
            raise SpecError(f"no network selected of spec {zoo_spec.name!r}; give network names, or None for all.")
        unknown = sorted(wanted - {plan.name for plan in plans})
        if unknown:
            raise SpecError(f"spec {zoo_spec.name!r} makes no network named {', '.join(unknown[:5])}"
                            f"{' …' if len(unknown) > 5 else ''}; list its networks with: netzoo generate --spec "
                            f"{spec} then netzoo zoo list --zoo DIR")
        plans = [plan for plan in plans if plan.name in wanted]
    if out.exists() and not out.is_dir():
        raise NetzooError(f"--out {out} is not a folder; give a folder for the zoo.")
    created, stage = [], None
    try:
        created = _make_dirs(out)
        stage = Path(tempfile.mkdtemp(prefix=".tmp-generate-", dir=out))
        rows = _render_checked(plans, zoo_spec, seed, shape, n_classes, stage, progress, out)
        manifest = pd.DataFrame(rows, columns=schema.MANIFEST.names)
        _publish(stage, out, manifest)
    except BaseException as exc:  # a failure (or Ctrl-C) midway leaves the folder as it was: no half-written zoo
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: never a user's files
        if isinstance(exc, OSError):  # disk full, read-only folder, …
            raise NetzooError(f"could not write the zoo into {out}: {exc.strerror or exc}; free space or give "
                              f"another --out, then run it again.") from None
        raise
    manifest.attrs["zoo_dir"] = str(out)
    return manifest


def _render_checked(plans: list[Plan], spec: ZooSpec, seed: int, shape: tuple[int, int, int], classes: int,
                    stage: Path, progress: bool, out: Path) -> list[dict[str, Any]]:
    """Render each plan into ``stage``, import it (checking its hash), build it, run it forward, measure it;
    return the manifest rows. Any failure raises GenerationError naming the network."""
    from netzoo.zoo import import_network

    env = _environment()
    rows = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-of-one passes: threads cost more than they give
    try:
        for plan in _progress(plans, progress, f"generate {spec.name} -> {out}"):
            source = render(plan, spec.name, spec.sha256, seed, shape, env).encode()
            digest = hashlib.sha256(source).hexdigest()
            path = stage / f"{plan.name}.py"
            path.write_bytes(source)
            try:
                model = import_network(path, plan.name, sha256=digest)()
                check_network(model, plan.name, shape, classes)
                costs = static_costs(model, shape, copy_first=False)  # the model is thrown away
            except GenerationError:
                raise
            except Exception as exc:  # any failure to import, build or run is the generator's bug: stop
                raise GenerationError(f"{plan.name} ({out / path.name}) failed to import, build or run on "
                                      f"{'x'.join(map(str, shape))}: {type(exc).__name__}: {exc}") from exc
            rows.append(manifest_row(plan, costs, spec, seed, shape, file_sha256=digest))
    finally:
        torch.set_num_threads(torch_threads)
    return rows


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first (to undo them)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


def _publish(stage: Path, out: Path, manifest: pd.DataFrame) -> None:
    """Move a fully rendered and checked zoo from ``stage`` into ``out``.

    The old manifest goes first and the new one comes last, so a zoo caught between the two generations has
    no manifest and is refused as missing, never read as a mix (its hashes would refuse a mix too). A file
    whose bytes did not change is left in place; files of an earlier generation that this one does not make
    are removed; other files (the user's) stay.
    """
    (out / "manifest.parquet").unlink(missing_ok=True)
    names = set(manifest["file"])
    for name in sorted(names):
        new, old = stage / name, out / name
        if old.is_file() and old.read_bytes() == new.read_bytes():
            continue  # unchanged: keep its mtime
        os.replace(new, old)
    for stale in out.glob("*.py"):  # files of an earlier generation into this folder
        if stale.name not in names and _generated_by_netzoo(stale):
            stale.unlink()
    pq.write_table(schema.conform(manifest, schema.MANIFEST), stage / "manifest.parquet")
    os.replace(stage / "manifest.parquet", out / "manifest.parquet")
    shutil.rmtree(stage)


def _generated_by_netzoo(path: Path) -> bool:
    """Whether ``path``'s first line is a netzoo header ('# Name: generated by netzoo from templates/…')."""
    with path.open("rb") as f:
        return b"generated by netzoo" in f.readline()


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="network", leave=False)
