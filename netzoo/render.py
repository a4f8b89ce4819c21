"""Render one network's Python file from its plan: the family's template (templates/, one macro per layer
kind in _layers.py.j2) filled with the plan's steps.

    render(plan, "default", spec_sha256, seed=0, input_shape=(1, 8, 8))  ->  the source of <plan.name>.py

Generated files are code, so rendering is escaped like HTML autoescaping, for Python: ``{{ … }}`` prints numbers
as literals, macro output as it is, text only through ``|text`` (one escaped line) and names only through
``|ident``; anything else stops the rendering. ``check_plan`` refuses a plan holding a value of the wrong type.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from netzoo.errors import GenerationError
from netzoo.families import REGISTRY
from netzoo.names import check_network_name
from netzoo.paths import templates_dir

# The nn module of each activation (a None cell's, where a layer needs one: nn.Identity).
ACTIVATION_MODULES = {"None": "Identity", "ReLU": "ReLU", "SELU": "SELU", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
CONV_DIMS = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}


# --- the plan: what a network's template renders ---------------------------------------------------
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
        """What was sampled, as the manifest's ``hparams`` JSON (netzoo.generate.plan_from_row reads it back)."""
        return {"view": list(self.view), "layers": self.layers, "dropout": self.dropout,
                "batch_norm": self.batch_norm}


# --- plan -> steps: the data the layer macros render ------------------------------------------
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
    if plan.activation == "None":
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


# --- the environment: every value that reaches a file is checked, then escaped for where it lands -----
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


def environment() -> jinja2.Environment:
    """Jinja over templates/, escaping like autoescape does for HTML but for Python: ``{{ … }}`` prints only
    numbers, macro output and filtered values (see _literal); ``|safe`` is gone and ``|join`` is strict."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=True, finalize=_literal)
    env.filters.update(text=_text, ident=_ident, join=_join)
    del env.filters["safe"]
    return env


def is_int(value: Any, low: int = 0) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_plan(plan: Plan) -> None:
    """GenerationError (or NetworkNameError) unless every value of ``plan`` has its type and range: a plan
    built by hand or read back from a manifest renders only when it could have been sampled."""
    check_network_name(plan.name)
    problems = []
    if plan.family not in REGISTRY:
        problems.append(f"family {plan.family!r:.60}")
    if plan.activation not in ACTIVATION_MODULES:
        problems.append(f"activation {plan.activation!r:.60}")
    if not is_int(plan.classes, 2):
        problems.append(f"classes {plan.classes!r:.60}")
    if not (isinstance(plan.view, tuple) and plan.view and all(is_int(v, 1) for v in plan.view)):
        problems.append(f"view {plan.view!r:.60}")
    if not (isinstance(plan.dropout, (int, float)) and not isinstance(plan.dropout, bool)
            and 0.0 <= plan.dropout < 1.0):
        problems.append(f"dropout {plan.dropout!r:.60}")
    if not isinstance(plan.batch_norm, bool):
        problems.append(f"batch_norm {plan.batch_norm!r:.60}")
    for i, layer in enumerate(plan.layers, start=1):
        kernel = layer.get("kernel")
        if (layer.get("type") not in (*CONV_DIMS, "Linear", "BasicBlock") or not is_int(layer.get("out"), 1)
                or not isinstance(layer.get("bias"), bool) or not isinstance(layer.get("act"), bool)
                or not (is_int(kernel) or isinstance(kernel, list) and all(is_int(k, 1) for k in kernel))):
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
    if not is_int(seed) or not (isinstance(input_shape, tuple) and len(input_shape) == 3
                                 and all(is_int(v, 1) for v in input_shape)):
        raise GenerationError(f"{plan.name}: seed {seed!r:.40} and input shape {input_shape!r:.60} must be "
                              f"non-negative integers and three positive integers.")
    env = env or environment()
    steps = build_steps(plan)
    c, h, w = input_shape
    template = REGISTRY[plan.family].template
    return env.get_template(template).render(
        name=plan.name, family=plan.family, template=template, spec=spec_name, spec_hash=spec_hash, seed=seed,
        input_shape=input_shape, classes=plan.classes, sampled=_sampled_text(plan), view=plan.view,
        pixels=c * h * w, docstring=f"{describe_plan(plan)} (N, {c}, {h}, {w}) -> (N, {plan.classes}) "
                                    f"log-probabilities.",
        steps=steps, downsample=any(s.kind == "BasicBlock" and s.inputs != s.out for s in steps))
