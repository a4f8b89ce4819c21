"""The family registry: one entry per family, holding everything the generator knows about it.

    Family("Conv2d", template="conv.py.j2", view=image, ranges={...}, sample=convs("Conv2d"), fits=fits_convs)

An entry gives the family's template (templates/, which renders its layers), how its forward views the
(N, C, H, W) input, its spec ranges with their defaults, its sampler (the weight layers of one network) and its
feasibility rule (a range no network of an input shape can satisfy). Adding a family is one ``register`` call
here plus one template. As torchvision's ``register_model``, registering a name twice raises.

A sampler draws from ``Draw.rng`` only, in a fixed order: the same spec, seed and shape give the same layers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from netzoo.errors import SpecError

STEM_SIDE = 28  # ResNetStyle's stem_kernel range is given for a 28-pixel side and scaled to the input's
# The largest value each range key (and Linear's grid keys) allows in a spec. Beyond them a network stops being
# a small benchmark network and generation crashes or runs out of memory (a depth of 100000 segfaulted after
# half a minute). The shipped specs reach 60 layers (deep-mlp) and width 2048 (variance). A family with a new
# range key adds its limit here.
MAXIMA = {"depth": 64, "conv_layers": 63, "hidden_layers": 63, "blocks": 32, "convs": 16, "linears": 32,
          "width": 8192, "channels": 1024, "stem_channels": 1024, "kernel": 10_000, "stem_kernel": 10_000}
_WIDTH, _CHANNELS, _KERNEL = (10, 128), (10, 64), (1, 10_000)  # the study's ranges


# --- input views: the shape (without N) a family's forward views its (C, H, W) input as ---------------
def flat(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """A flat vector of C*H*W (Linear, Basic)."""
    return (math.prod(shape),)


def image(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The image as it is, (C, H, W) (Conv2d, ResNetStyle)."""
    return tuple(shape)


def _folds(shape: tuple[int, int, int]) -> bool:
    pixels = math.prod(shape)
    return pixels % 16 == 0 and pixels > 16


def sequence(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Conv1d's input: the C*H*W pixels as 16 channels x (C*H*W/16) steps (the study's MNIST 16x49; digits 16x4;
    3x32x32 16x192), or C channels x H*W steps when 16 does not divide them."""
    c, h, w = shape
    return (16, c * h * w // 16) if _folds(shape) else (c, h * w)


def volume(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Conv3d's input: the same 16 x P split as a one-channel volume 1 x 16 x a x b, a*b = P and a the largest
    divisor of P not above sqrt(P) (MNIST 1x16x7x7 as the study; digits 1x16x2x2; 3x32x32 1x16x12x16), or
    1 x C x H x W when 16 does not divide the pixels."""
    if not _folds(shape):
        return (1, *shape)
    p = math.prod(shape) // 16
    a = max(d for d in range(1, math.isqrt(p) + 1) if p % d == 0)
    return (1, 16, a, p // a)


# --- what a sampler draws from, and its building blocks -------------------------------------------------
@dataclass
class Draw:
    """One network of a cell to sample: the cell's generator and ranges, the input view, the classes, and the
    value spread evenly within the cell (weight layers; ResNetStyle: blocks) or a grid point."""

    rng: random.Random
    ranges: dict[str, tuple[int, int]]
    view: tuple[int, ...]
    classes: int
    depth: int | None
    grid_point: tuple[int, int] | None = None
    bias_probability: float = 0.3

    def bias(self) -> bool:
        """Whether the next weight layer has a bias (the study: probability 0.3)."""
        return self.rng.random() < self.bias_probability


def layer(kind: str, out: int, kernel: int | list[int], bias: bool) -> dict:
    """One weight layer of a plan: {"type", "out", "kernel", "bias"} ("act" is added by the generator)."""
    return {"type": kind, "out": out, "kernel": kernel, "bias": bias}


def widths(rng: random.Random, n_hidden: int, low: int, high: int) -> list[int]:
    """First hidden width uniform in [low, high], each next uniform in [low, previous] (the study's rule)."""
    out, top = [], high
    for _ in range(n_hidden):
        top = rng.randint(min(low, top), top)
        out.append(top)
    return out


def kernels(rng: random.Random, dims: tuple[int, ...], n: int, low: int, high: int) -> tuple[list[int], tuple]:
    """n kernel sides (square/cubic), each uniform in [low, min(high, what is left)], leaving room for the rest;
    returns the sides and the spatial dims left after them."""
    sides = []
    dims = tuple(dims)
    for j in range(n):
        room = min(dims) - (n - 1 - j) * (low - 1)
        k = rng.randint(low, min(high, room))
        sides.append(k)
        dims = tuple(d - k + 1 for d in dims)
    return sides, dims


def stem_kernel_range(stem_kernel: tuple[int, int], side: int) -> tuple[int, int]:
    """The stem kernel range given for a 28 side, scaled to this side (digits' 8: 1-20 -> 1-6)."""
    if side == STEM_SIDE:
        return stem_kernel
    low = max(1, round(stem_kernel[0] * side / STEM_SIDE))
    return low, max(low, round(stem_kernel[1] * side / STEM_SIDE))


# --- samplers ------------------------------------------------------------------------------------------
def sample_basic(d: Draw) -> list[dict]:
    """The study's Basic: one Linear from the flat pixels to the classes, with bias (nothing drawn)."""
    return [layer("Linear", d.classes, 0, True)]


def sample_linear(d: Draw) -> list[dict]:
    """An MLP: widths shrink (or a grid point's constant width), then a Linear to the classes."""
    if d.grid_point:
        hidden, width = d.grid_point
        sizes = [width] * hidden
    else:
        sizes = widths(d.rng, d.depth - 1, *d.ranges["width"])
    return [layer("Linear", w, 0, d.bias()) for w in sizes + [d.classes]]


def convs(kind: str) -> Callable[[Draw], list[dict]]:
    """A pure conv family's sampler: depth-1 convs, then a last conv whose kernel covers what remains, so it
    outputs (classes, 1, …) and no Linear is needed."""
    def sample(d: Draw) -> list[dict]:
        channels = [d.rng.randint(*d.ranges["channels"]) for _ in range(d.depth - 1)]
        sides, left = kernels(d.rng, d.view[1:], d.depth - 1, *d.ranges["kernel"])
        last_kernel = left[0] if len(left) == 1 else list(left)
        layers = [layer(kind, c, k, d.bias()) for c, k in zip(channels, sides)]
        return layers + [layer(kind, d.classes, last_kernel, d.bias())]
    return sample


def convs_then_linear(kind: str) -> Callable[[Draw], list[dict]]:
    """A ConvNdThenLinear sampler: conv_layers convs, then Linear layers (shrinking widths) to the classes."""
    def sample(d: Draw) -> list[dict]:
        r = d.ranges
        n_conv = d.rng.randint(r["conv_layers"][0], min(r["conv_layers"][1], d.depth - 1))
        channels = [d.rng.randint(*r["channels"]) for _ in range(n_conv)]
        sides, _ = kernels(d.rng, d.view[1:], n_conv, *r["kernel"])
        sizes = widths(d.rng, d.depth - n_conv - 1, *r["width"])
        layers = [layer(kind, c, k, d.bias()) for c, k in zip(channels, sides)]
        return layers + [layer("Linear", w, 0, d.bias()) for w in sizes + [d.classes]]
    return sample


def sample_resnet(d: Draw) -> list[dict]:
    """Conv2d stem -> ``depth`` BasicBlocks of the stem's width -> convs -> Linear layers to the classes."""
    r, rng = d.ranges, d.rng
    side = min(d.view[1:])
    k_low, k_high = stem_kernel_range(r["stem_kernel"], side)
    stem_c = rng.randint(*r["stem_channels"])
    stem_k = rng.randint(k_low, min(k_high, side - r["convs"][1] * (r["kernel"][0] - 1)))
    n_convs = rng.randint(*r["convs"])
    channels = [rng.randint(*r["channels"]) for _ in range(n_convs)]
    dims = tuple(s - stem_k + 1 for s in d.view[1:])
    sides, _ = kernels(rng, dims, n_convs, *r["kernel"])
    sizes = widths(rng, rng.randint(*r["linears"]) - 1, *r["width"])
    layers = [layer("Conv2d", stem_c, stem_k, d.bias())]
    layers += [layer("BasicBlock", stem_c, 3, False) for _ in range(d.depth)]
    layers += [layer("Conv2d", c, k, d.bias()) for c, k in zip(channels, sides)]
    return layers + [layer("Linear", w, 0, d.bias()) for w in sizes + [d.classes]]


# --- feasibility ---------------------------------------------------------------------------------------
@dataclass
class Fit:
    """A family's ranges against one input shape, for its feasibility rule; ``where`` and ``key`` name the
    spec file and table in messages."""

    family: str
    ranges: dict[str, tuple[int, int]]
    view: tuple[int, ...]
    input_shape: tuple[int, int, int]
    where: str
    key: str

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.input_shape))

    def kernels_fit(self, side: int, convs: int) -> None:
        """SpecError unless ``convs`` convs of the smallest kernel fit a side of ``side`` pixels."""
        low = self.ranges["kernel"][0]
        if convs > 0 and side < convs * (low - 1) + 1:
            most = (side - 1) // convs + 1
            raise SpecError(f"{self.where}: {self.key}.kernel: {list(self.ranges['kernel'])}: a side of {side} "
                            f"(a {self.shape_text} input, {self.family} input {'x'.join(map(str, self.view))}) "
                            f"cannot take {convs} convs of kernel >= {low}; allowed: kernel low <= {most}, or "
                            f"fewer layers, or a larger input.")


def fits_anything(fit: Fit) -> None:
    """Linear and Basic take any input."""


def fits_convs(fit: Fit) -> None:
    """Up to depth-1 convs of the smallest kernel must fit the view's smallest side."""
    fit.kernels_fit(min(fit.view[1:]), fit.ranges["depth"][1] - 1)


def fits_convs_then_linear(fit: Fit) -> None:
    """At least one conv and one Linear, and the convs' smallest kernels must fit the smallest side."""
    r = fit.ranges
    if r["depth"][0] < 2:
        raise SpecError(f"{fit.where}: {fit.key}.depth: {list(r['depth'])} allows depth 1, but a {fit.family} needs "
                        f"a conv and a Linear; give depth >= 2.")
    if r["conv_layers"][0] > r["depth"][0] - 1:
        raise SpecError(f"{fit.where}: {fit.key}.conv_layers: {list(r['conv_layers'])} leaves no Linear layer at "
                        f"depth {r['depth'][0]}; allowed: conv_layers low <= {r['depth'][0] - 1}.")
    fit.kernels_fit(min(fit.view[1:]), min(r["conv_layers"][1], r["depth"][1] - 1))


def fits_resnet(fit: Fit) -> None:
    """The scaled stem kernel and then the convs' smallest kernels must fit the smallest side."""
    r, side = fit.ranges, min(fit.view[1:])
    convs = r["convs"][1]
    k_low, _ = stem_kernel_range(r["stem_kernel"], side)
    room = side - convs * (r["kernel"][0] - 1)
    if k_low > room:
        raise SpecError(f"{fit.where}: {fit.key}.stem_kernel: {list(r['stem_kernel'])} (scaled to {k_low} for the "
                        f"{side}-pixel side of a {fit.shape_text} input) leaves no room; allowed: a low end "
                        f"that scales to at most {room} (on a 28 side: <= {room * STEM_SIDE // side}).")
    fit.kernels_fit(side - k_low + 1, convs)


# --- the registry ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Everything the generator knows about one family."""

    name: str
    template: str                                   # under templates/; it renders the layers
    view: Callable[[tuple[int, int, int]], tuple[int, ...]]
    sample: Callable[[Draw], list[dict]]            # the weight layers of one network
    fits: Callable[[Fit], None] = fits_anything     # SpecError when the ranges cannot fit an input shape
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # spec keys -> defaults, inclusive
    spread: str = "depth"                           # the range spread evenly within a cell
    grid: bool = False                              # a spec may give grid = {hidden_layers, width}
    in_spec: bool = True                            # False for Basic: made by `basic = true`, not a table


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry; a name registered twice raises ValueError."""
    if family.name in REGISTRY:
        raise ValueError(f"family {family.name!r} is registered twice")
    REGISTRY[family.name] = family
    return family


def spec_families() -> tuple[str, ...]:
    """The families a spec may hold a [families.<Family>] table for, in canonical order."""
    return tuple(name for name, family in REGISTRY.items() if family.in_spec)


register(Family("Basic", "basic.py.j2", flat, sample_basic, in_spec=False))
register(Family("Linear", "linear.py.j2", flat, sample_linear, ranges={"depth": (2, 6), "width": _WIDTH},
                grid=True))
for _n, _view in ((1, sequence), (2, image), (3, volume)):
    register(Family(f"Conv{_n}d", "conv.py.j2", _view, convs(f"Conv{_n}d"), fits_convs,
                    ranges={"depth": (2, 6), "channels": _CHANNELS, "kernel": _KERNEL}))
for _n, _view in ((1, sequence), (2, image), (3, volume)):
    register(Family(f"Conv{_n}dThenLinear", "conv_then_linear.py.j2", _view, convs_then_linear(f"Conv{_n}d"),
                    fits_convs_then_linear, ranges={"depth": (2, 6), "conv_layers": (1, 2), "channels": _CHANNELS,
                                                    "kernel": _KERNEL, "width": _WIDTH}))
register(Family("ResNetStyle", "resnet_style.py.j2", image, sample_resnet, fits_resnet,
                ranges={"stem_channels": (10, 63), "stem_kernel": (1, 20), "blocks": (1, 3), "convs": (1, 2),
                        "channels": _CHANNELS, "kernel": _KERNEL, "linears": (1, 3), "width": _WIDTH},
                spread="blocks"))
