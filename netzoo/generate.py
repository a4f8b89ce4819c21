"""Render a zoo: seeded, shape-aware sampling of every network of a spec; render templates/; check each
rendered file (import, build, forward pass on the target shape); measure its static costs; write the manifest.

    generate_zoo("default", dataset="mnist")  ->  zoo/mnist/<Name>.py + zoo/mnist/manifest.parquet

The same spec + seed + input shape gives byte-identical files and manifest: every random draw comes from a
random.Random seeded by (seed, family, activation), and nothing else (time, paths, dict order) enters them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import pyarrow.parquet as pq
import torch

from netzoo import schema
from netzoo.datasets import dataset_info
from netzoo.errors import GenerationError, ShapeMismatchError, SpecError
from netzoo.measure import static_costs
from netzoo.paths import templates_dir
from netzoo.spec import ACTIVATIONS, FamilySpec, ZooSpec, load_spec

TEMPLATES = {"Basic": "basic.py.j2", "Linear": "linear.py.j2", "ResNetStyle": "resnet_style.py.j2",
             **{f"Conv{n}d": "conv.py.j2" for n in (1, 2, 3)},
             **{f"Conv{n}dThenLinear": "conv_then_linear.py.j2" for n in (1, 2, 3)}}
ACTIVATION_CODE = {"ReLU": "nn.ReLU()", "SELU": "nn.SELU()", "Sigmoid": "nn.Sigmoid()", "Tanh": "nn.Tanh()",
                   "None": "nn.Identity()"}
# torchvision's BasicBlock keeps its own ReLU(inplace=True) in ReLU cells (the study's memory figure needs it).
BLOCK_ACTIVATION_CODE = {**ACTIVATION_CODE, "ReLU": "nn.ReLU(inplace=True)"}
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


@dataclass
class Step:
    """One line of forward (and the __init__ lines it needs)."""

    init: list[str]
    forward: str
    shape: tuple[int, ...]
    comment: str = ""


@dataclass
class Rendered:
    plan: Plan
    steps: list[Step] = field(default_factory=list)
    block_import: bool = False


def _conv_out(shape: tuple[int, ...], out: int, kernel) -> tuple[int, ...]:
    kernels = kernel if isinstance(kernel, list) else [kernel] * (len(shape) - 1)
    return (out, *(s - k + 1 for s, k in zip(shape[1:], kernels)))


def build_steps(plan: Plan) -> Rendered:
    """The __init__ and forward lines of a plan, with the shape after each step."""
    r = Rendered(plan)
    shape = plan.view
    r.steps.append(Step([], f"x = x.view(-1, {', '.join(map(str, plan.view))})", shape,
                        comment=f"{plan.family} input"))
    n_weights = len(plan.layers)
    for i, layer in enumerate(plan.layers, start=1):
        kind, out, bias = layer["type"], layer["out"], layer["bias"]
        last = i == n_weights
        if kind == "Linear":
            if len(shape) > 1:
                shape = (math.prod(shape),)
                r.steps.append(Step([], "x = torch.flatten(x, 1)", shape))
            name = f"fc{i}"
            features = "num_classes" if last else str(out)
            init = f"self.{name} = nn.Linear({shape[0]}, {features}, bias={bias})"
            shape = (out,)
        elif kind == "BasicBlock":
            r.block_import = True
            name = f"block{i}"
            why = "a None cell: no activation" if plan.activation == "None" else "the cell's activation"
            init_lines = [f"self.{name} = BasicBlock({shape[0]}, {out}, downsample={_downsample(shape[0], out)})",
                          f"self.{name}.relu = {BLOCK_ACTIVATION_CODE[plan.activation]}  # {why}, not the block's ReLU"]
            shape = (out, *shape[1:])
            r.steps.append(Step(init_lines, f"x = self.{name}(x)", shape))
            continue
        else:  # Conv1d, Conv2d, Conv3d
            name = f"conv{i}"
            channels = "num_classes" if last else str(out)
            kernel = layer["kernel"]
            ktext = f"({', '.join(map(str, kernel))})" if isinstance(kernel, list) else str(kernel)
            init = f"self.{name} = nn.{kind}({shape[0]}, {channels}, kernel_size={ktext}, bias={bias})"
            shape = _conv_out(shape, out, kernel)
        r.steps.append(Step([init], f"x = self.{name}(x)", shape))
        if last:
            break
        if plan.batch_norm:
            dims = {1: 1, 2: 1, 3: 2, 4: 3}[len(shape)]
            r.steps.append(Step([f"self.bn{i} = nn.BatchNorm{dims}d({shape[0]})"], f"x = self.bn{i}(x)", shape))
        if layer["act"]:
            r.steps.append(Step([f"self.act{i} = {ACTIVATION_CODE[plan.activation]}"], f"x = self.act{i}(x)", shape))
            if plan.dropout > 0:
                r.steps.append(Step([f"self.drop{i} = nn.Dropout(p={plan.dropout})"], f"x = self.drop{i}(x)", shape))
    if len(shape) > 1:  # pure conv families end with (classes, 1, …)
        shape = (math.prod(shape),)
        r.steps.append(Step([], "x = torch.flatten(x, 1)", shape))
    r.steps.append(Step(["self.log_softmax = nn.LogSoftmax(dim=1)"], "return self.log_softmax(x)", shape))
    return r


def _downsample(inplanes: int, planes: int) -> str:
    """BasicBlock's downsample, built as torchvision's _make_layer does: only when the width changes (stride 1)."""
    if inplanes == planes:
        return "None"
    return f"nn.Sequential(conv1x1({inplanes}, {planes}), nn.BatchNorm2d({planes}))"


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


# --- feasibility: a range no network of this input shape can satisfy ----------------------------------
def check_feasible(spec: ZooSpec, input_shape: tuple[int, int, int], classes: int) -> None:
    """Raise SpecError naming the file and key when a family's ranges cannot fit this input shape."""
    where = spec.path.name if spec.name == spec.path.stem else spec.name
    shape_text = "x".join(map(str, input_shape))
    if classes < 1:
        raise SpecError(f"classes: {classes} is not allowed; give at least 1.")
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


# --- rendering, checking and the manifest ---------------------------------------------------------
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                              autoescape=False)


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"(N, {', '.join(map(str, shape))})"


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
    """The Python source of one network, rendered from its family's template."""
    env = env or _environment()
    built = build_steps(plan)
    init_lines = [line for step in built.steps for line in step.init]
    forwards = [step.forward for step in built.steps]
    pad = max(len(f) for f in forwards)
    forward_lines = []
    for step in built.steps:
        note = _shape_text(step.shape) + (f" {step.comment}" if step.comment else "")
        forward_lines.append(f"{step.forward.ljust(pad)}  # {note}")
    c, h, w = input_shape
    template = TEMPLATES[plan.family]
    return env.get_template(template).render(
        name=plan.name, family=plan.family, activation=plan.activation, template=template,
        spec=spec_name, spec_hash=spec_hash, seed=seed, input="x".join(map(str, input_shape)),
        classes=plan.classes, sampled=_sampled_text(plan), view="x".join(map(str, plan.view)),
        pixels=c * h * w, docstring=f"{describe_plan(plan)} (N, {c}, {h}, {w}) -> (N, {plan.classes}) "
                                    f"log-probabilities.",
        init_lines=init_lines, forward_lines=forward_lines, block_import=built.block_import,
        downsample=any("conv1x1(" in line for line in init_lines))


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
                 input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """One manifest row (schema.MANIFEST) of a rendered network."""
    layers = plan.layers
    kernel_side = [max(layer["kernel"]) if isinstance(layer["kernel"], list) else layer["kernel"] for layer in layers]
    blocks_act = plan.activation != "None"
    return {
        "network": plan.name, "family": plan.family, "activation": plan.activation,
        "depth": sum(2 if layer["type"] == "BasicBlock" else 1 for layer in layers),
        "arch_id": arch_id(plan), "file": f"{plan.name}.py", "template": TEMPLATES[plan.family],
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
    if input_shape is None:
        info = dataset_info(dataset or "digits")
        return info.name, info.input_shape, info.classes if classes is None else classes
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeMismatchError(f"input shape {input_shape!r} is not CxHxW with positive sides, e.g. (1, 28, 28).")
    return (dataset or "x".join(map(str, shape))), shape, 10 if classes is None else int(classes)  # type: ignore[return-value]


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

    from netzoo.zoo import import_network

    zoo_spec = load_spec(spec)
    label, shape, n_classes = _resolve_target(dataset, input_shape, classes)
    seed = zoo_spec.seed if seed is None else int(seed)
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
    out.mkdir(parents=True, exist_ok=True)

    plans = plan_zoo(zoo_spec, shape, n_classes, seed)
    if networks is not None:
        wanted = set(networks)
        unknown = sorted(wanted - {plan.name for plan in plans})
        if unknown:
            raise SpecError(f"spec {zoo_spec.name!r} makes no network named {', '.join(unknown[:5])}"
                            f"{' …' if len(unknown) > 5 else ''}; list its networks with: netzoo generate --spec "
                            f"{spec} then netzoo zoo list --zoo DIR")
        plans = [plan for plan in plans if plan.name in wanted]
    env = _environment()
    rows = []
    bar = _progress(plans, progress, f"generate {zoo_spec.name} -> {out}")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-of-one passes: threads cost more than they give
    try:
        for plan in bar:
            source = render(plan, zoo_spec.name, zoo_spec.sha256, seed, shape, env)
            path = out / f"{plan.name}.py"
            if not path.exists() or path.read_text() != source:
                path.write_text(source)
            try:
                model = import_network(path, plan.name)()
                check_network(model, plan.name, shape, n_classes)
                costs = static_costs(model, shape, copy_first=False)  # the model is thrown away
            except GenerationError:
                raise
            except Exception as exc:  # any failure to import, build or run is the generator's bug: stop
                raise GenerationError(f"{plan.name} ({path}) failed to import, build or run on "
                                      f"{'x'.join(map(str, shape))}: {type(exc).__name__}: {exc}") from exc
            rows.append(manifest_row(plan, costs, zoo_spec, seed, shape))
    finally:
        torch.set_num_threads(torch_threads)
    manifest = pd.DataFrame(rows, columns=schema.MANIFEST.names)
    names = {f"{p.name}.py" for p in plans}
    for stale in out.glob("*.py"):  # files of an earlier generation into this folder
        if stale.name not in names and "generated by netzoo" in stale.read_text().split("\n", 1)[0]:
            stale.unlink()
    tmp = out / ".tmp-manifest.parquet"
    pq.write_table(schema.conform(manifest, schema.MANIFEST), tmp)
    tmp.replace(out / "manifest.parquet")
    manifest.attrs["zoo_dir"] = str(out)
    return manifest


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="network", leave=False)
