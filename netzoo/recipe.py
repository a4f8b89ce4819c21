"""How a network is trained: the Recipe dataclass, its hash, and its TOML form.

The default is the study's recipe: Adam (lr 0.002, amsgrad), batch 25, 4 epochs, seed 42, NLL loss on
the networks' log-probabilities. The resolved recipe and its hash are stored with every result row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from netzoo.errors import RecipeError
from netzoo.paths import RECIPES_DIR

OPTIMIZERS = ("sgd", "sgd-momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
INITS = ("default", "xavier-normal", "xavier-uniform", "kaiming-normal", "kaiming-uniform", "randn")


@dataclass(frozen=True)
class Recipe:
    """A resolved training recipe. Every field is part of the hash except ``name``."""

    name: str = "default"            # a label for tables and charts; not hashed
    optimizer: str = "adam"          # one of OPTIMIZERS (torch.optim's own)
    lr: float = 0.002                # learning rate
    amsgrad: bool = True             # Adam/AdamW only
    momentum: float = 0.0            # SGD/RMSProp momentum (sgd-momentum and nesterov default to 0.9 if 0)
    weight_decay: float = 0.0        # L2 penalty (AdamW: decoupled)
    batch_size: int = 25             # training batch size, in samples
    eval_batch_size: int = 1000      # test evaluation batch size, in samples (no effect on results)
    epochs: int = 4                  # epochs to train
    schedule: str = "none"           # lr schedule: none, cosine (to 0 over all epochs) or step
    step_size: int = 1               # step schedule: epochs between decays
    gamma: float = 0.1               # step schedule: decay factor
    init: str = "default"            # weight initialisation: one of INITS ("default" = PyTorch's own)
    # dropout and batch_norm are template options: the trainer never reads them; they name the zoo variant the
    # recipe trains (netzoo.sweep generates it; netzoo.jobs.check_fits refuses a zoo made without them), and
    # they stay in the hash so that results made before keep their keys (tests/test_recipes.py).
    dropout: float = 0.0             # dropout probability (a template option: needs a zoo generated with it)
    batch_norm: bool = False         # batch norm (a template option: needs a zoo generated with it)
    early_stopping_patience: int = 0  # epochs without validation-loss improvement before stopping; 0 = never
    early_stopping_min_delta: float = 0.0  # improvement in validation loss that counts
    allow_tf32: bool = True          # CUDA only: TF32 matrix multiplies (recorded in the hash)
    validation: float = 0.0          # fraction of the training split held out for validation, in [0, 1)

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")
        if self.init not in INITS:
            problems.append(f"init {self.init!r} is unknown; allowed: {', '.join(INITS)}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            problems.append(f"batch sizes must be >= 1, got {self.batch_size}/{self.eval_batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0 or self.momentum < 0:
            problems.append("weight_decay and momentum must be >= 0")
        if self.early_stopping_patience < 0:
            problems.append(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if not 0.0 <= self.validation < 1.0:
            problems.append(f"validation must be a fraction of the training split in [0, 1), got {self.validation}")
        elif self.early_stopping_patience and not self.validation:
            problems.append("early stopping watches the validation loss, and this recipe holds no validation split "
                            "(the test split must not decide when training stops): add one, e.g. validation = "
                            "0.0833 (1/12 of the training split, as --recipe study+val), or set "
                            "early_stopping_patience = 0")
        if problems:
            raise RecipeError(f"recipe {self.name!r}: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (for JSON and TOML)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON of all fields, sorted keys: stored in the networks table."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        """First 16 hex digits of sha256 over the canonical JSON of every field but ``name`` and
        ``eval_batch_size`` (neither changes the results), and but the fields added since results were first
        written (ADDED_FIELDS) while they hold the value that gives the old behaviour: every recipe written
        before a field existed keeps its hash, so its results still count."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ("name", "eval_batch_size")
                   and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (validated again)."""
        return from_dict({**self.to_dict(), **changes})


# Fields added after results were first written -> the value that trains as before they existed. At that
# value a field stays out of the hash (Recipe.hash): the study's recipe hashes as it always did.
ADDED_FIELDS: dict[str, Any] = {"validation": 0.0}

_TYPES = {"str": str, "float": float, "int": int, "bool": bool}


def _coerce(name: str, value: Any, type_name: str, where: str) -> Any:
    """A TOML value as the field's type: 1 -> 1.0 for floats (so `lr = 1` and `lr = 1.0` hash alike)."""
    kind = _TYPES[type_name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise RecipeError(f"{where}: {name} must be {type_name}, got {value!r}.")
    return value


def from_dict(values: dict[str, Any], where: str = "recipe") -> Recipe:
    """A Recipe from a dict (e.g. a TOML table); unknown keys are refused with the allowed ones named."""
    allowed = {f.name for f in fields(Recipe)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")
    types = {f.name: f.type for f in fields(Recipe)}
    values = {k: _coerce(k, v, types[k], where) for k, v in values.items()}
    try:
        return Recipe(**values)
    except TypeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


STUDY = Recipe()  # the study's recipe: Adam lr 0.002 amsgrad, batch 25, 4 epochs


# --- TOML: one recipe, and grids of recipes -----------------------------------------------------
# A recipe file holds one [recipe] table. A grid file holds [grid] (name, description, the zoo spec to
# generate instead of --zoo, the network selection), [base] (fields every recipe shares), [axes] (lists whose
# cartesian product gives recipes; a value may be a table setting several fields, named by the axis's own field)
# and [[recipes]] (explicit recipes, after the product). Recipe names from axes: strings as they are, numbers as
# field=value, joined by '+': "adam+xavier-normal", "lr=0.01".
GRID_KEYS = ("grid", "base", "axes", "recipes")
GRID_TABLE_KEYS = ("name", "description", "spec", "networks")
SELECTION_KEYS = ("family", "activation", "name", "per_cell")


def to_toml(recipe: Recipe) -> str:
    """The recipe as a TOML document with one [recipe] table; from_toml() reads it back equal."""
    return tomli_w.dumps({"recipe": recipe.to_dict()})


def from_toml(text: str, where: str = "recipe.toml") -> Recipe:
    """A Recipe from a TOML document holding a [recipe] table (or the fields at top level)."""
    doc = _parse(text, where)
    if "grid" in doc or "axes" in doc:
        raise RecipeError(f"{where} is a recipe grid, not one recipe: run `netzoo sweep {where}`, "
                          f"or name one of its recipes as GRID/RECIPE.")
    if "recipe" not in doc:  # the fields at top level
        return from_dict(doc, where=where)
    extra = sorted(set(doc) - {"recipe"})
    if not isinstance(doc["recipe"], dict) or extra:
        raise RecipeError(f"{where}: a recipe file holds one [recipe] table and nothing else; found "
                          f"{'recipe = ' + repr(doc['recipe']) if not isinstance(doc['recipe'], dict) else ''}"
                          f"{'unknown key(s) ' + ', '.join(extra) if extra else ''}.")
    return from_dict(doc["recipe"], where=f"{where}: [recipe]")


def _parse(text: str, where: str) -> dict[str, Any]:
    """TOML text -> dict, with the syntax error's place in the message."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{where}: invalid TOML: {exc}. Fix the file's syntax.") from None


@dataclass(frozen=True)
class Selection:
    """Which networks of a zoo a grid trains: family, activation and name globs (all must match), then the
    first ``per_cell`` networks of each family x activation cell in natural order (None: all)."""

    family: tuple[str, ...] = ()      # fnmatch globs on the family, e.g. ("Linear",); empty: any
    activation: tuple[str, ...] = ()  # fnmatch globs on the activation, e.g. ("ReLU", "Tanh"); empty: any
    name: tuple[str, ...] = ()        # fnmatch globs on the network name, e.g. ("Conv2d*_1*",); empty: any
    per_cell: int | None = None       # keep the first N networks of each cell

    def select(self, manifest: pd.DataFrame) -> list[str]:
        """Names of the manifest's networks this selection keeps, in natural order (netzoo.zoo.select_networks)."""
        from netzoo.zoo import select_networks

        return select_networks(manifest, names=self.name, family=self.family, activation=self.activation,
                               per_cell=self.per_cell)

    def to_dict(self) -> dict[str, Any]:
        """The non-empty fields, as the grid file's [grid.networks] table."""
        out: dict[str, Any] = {k: list(getattr(self, k)) for k in ("family", "activation", "name") if getattr(self, k)}
        if self.per_cell is not None:
            out["per_cell"] = self.per_cell
        return out


@dataclass(frozen=True)
class Grid:
    """A named set of recipes and the networks to train under each (see load_grid)."""

    name: str
    recipes: tuple[Recipe, ...]
    networks: Selection = Selection()
    description: str = ""
    spec: str | None = None  # a zoo spec (name or path): the sweep generates this zoo instead of using --zoo

    def to_toml(self) -> str:
        """The grid with every recipe written out in full as [[recipes]]; load_grid reads it back equal."""
        head: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.spec is not None:
            head["spec"] = self.spec
        if self.networks.to_dict():
            head["networks"] = self.networks.to_dict()
        return tomli_w.dumps({"grid": head, "recipes": [r.to_dict() for r in self.recipes]})

    def recipe(self, name: str) -> Recipe:
        """The grid's recipe called ``name``."""
        for recipe in self.recipes:
            if recipe.name == name:
                return recipe
        raise RecipeError(f"grid {self.name!r} has no recipe {name!r}; its recipes: "
                          f"{', '.join(r.name for r in self.recipes)}.")


def _check_keys(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """The table itself, or a RecipeError naming the unknown keys and the allowed ones."""
    if not isinstance(table, dict):
        raise RecipeError(f"{where} must be a table, got {table!r}.")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}.")
    return table


def _axis_label(field: str, value: Any) -> str:
    """How one axis value shows in a recipe name: strings as they are, numbers as field=value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return f"{field}={str(value).lower()}"
    return f"{field}={value:g}" if isinstance(value, float) else f"{field}={value}"


def grid_from_toml(text: str, where: str = "grid.toml") -> Grid:
    """A Grid from a grid document: [grid], [base], [axes] and [[recipes]] (see the comment above)."""
    doc = _check_keys(_parse(text, where), GRID_KEYS, where)
    head = _check_keys(doc.get("grid", {}), GRID_TABLE_KEYS, f"{where}: [grid]")
    sel = _check_keys(head.get("networks", {}), SELECTION_KEYS, f"{where}: [grid.networks]")
    globs = {}
    for key in ("family", "activation", "name"):
        value = sel.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RecipeError(f"{where}: [grid.networks] {key} must be a list of globs, got {value!r}.")
        globs[key] = tuple(value)
    per_cell = sel.get("per_cell")
    if per_cell is not None and (not isinstance(per_cell, int) or isinstance(per_cell, bool) or per_cell < 1):
        raise RecipeError(f"{where}: [grid.networks] per_cell must be an integer >= 1, got {per_cell!r}.")
    base = doc.get("base", {})
    _check_keys(base, tuple(f.name for f in fields(Recipe)), f"{where}: [base]")
    axes = _check_keys(doc.get("axes", {}), tuple(f.name for f in fields(Recipe) if f.name != "name"),
                       f"{where}: [axes]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{where}: [axes] {key} must be a non-empty list, got {values!r}.")
    recipes = []
    for combo in itertools.product(*axes.values()) if axes else []:
        changes, labels = {}, []
        for key, value in zip(axes, combo):
            # a table value sets several fields at once, e.g. {optimizer = "sgd-momentum", lr = 0.01}
            if isinstance(value, dict) and key not in value:
                raise RecipeError(f"{where}: [axes] {key}: the table {value!r} must set {key}.")
            changes.update(value if isinstance(value, dict) else {key: value})
            labels.append(_axis_label(key, value[key] if isinstance(value, dict) else value))
        name = "+".join(labels)
        recipes.append(from_dict({**base, **changes, "name": name}, where=f"{where}: [axes] {name}"))
    explicit = doc.get("recipes", [])
    if not isinstance(explicit, list):
        raise RecipeError(f"{where}: 'recipes' must be an array of tables ([[recipes]]).")
    for i, table in enumerate(explicit):
        if not isinstance(table, dict) or "name" not in table:
            raise RecipeError(f"{where}: [[recipes]] #{i + 1} needs a name, e.g. name = \"baseline\".")
        recipes.append(from_dict({**base, **table}, where=f"{where}: [[recipes]] {table['name']}"))
    if not recipes:
        raise RecipeError(f"{where}: the grid has no recipes; add an [axes] table or [[recipes]] entries.")
    seen: dict[str, str] = {}
    for recipe in recipes:
        if recipe.name in seen.values():
            raise RecipeError(f"{where}: two recipes are named {recipe.name!r}; give each a distinct name.")
        if recipe.hash in seen:
            raise RecipeError(f"{where}: recipes {seen[recipe.hash]!r} and {recipe.name!r} are identical "
                              f"(hash {recipe.hash}); drop one.")
        seen[recipe.hash] = recipe.name
    name = head.get("name", Path(where).stem)
    spec = head.get("spec")
    if spec is not None and not isinstance(spec, str):
        raise RecipeError(f"{where}: [grid] spec must be a spec name or path, got {spec!r}.")
    return Grid(name=str(name), recipes=tuple(recipes), networks=Selection(**globs, per_cell=per_cell),
                description=str(head.get("description", "")), spec=spec)


def shipped_grids() -> list[str]:
    """Names of the grids shipped in netzoo/recipes/ (optimizers, lr, ...)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml") if "grid" in _parse(p.read_text(), p.name))


def _resolve(name_or_path: str | Path, what: str) -> Path:
    """A shipped file's path by name, or the given path; a RecipeError naming the shipped ones otherwise."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RecipeError(f"No {what} file {path}. Give an existing PATH.toml or a shipped name: "
                              f"{', '.join(shipped_grids())}.")
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise RecipeError(f"Unknown {what} {str(name_or_path)!r}; shipped grids: {', '.join(shipped_grids())} "
                          f"(or give a PATH.toml).")
    return shipped


def load_grid(name_or_path: str | Path) -> Grid:
    """A shipped grid by name (optimizers, regularisation, lr, batch-size, batch-norm, depth-width, deep-mlp,
    early-stopping) or a grid TOML file."""
    path = _resolve(name_or_path, "recipe grid")
    return grid_from_toml(path.read_text(), where=path.name if path.parent == RECIPES_DIR else str(path))


def load_recipe(name_or_path: str | Path | Recipe | None) -> Recipe:
    """A Recipe from: None, 'default' or 'study' (the study's), a recipe TOML file, or GRID/RECIPE (one recipe
    of a shipped grid or grid file, e.g. 'optimizers/adam+xavier-normal')."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    if name_or_path is None or str(name_or_path) in ("default", "study"):
        return STUDY
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise RecipeError(f"No recipe file {path}. Give an existing PATH.toml, 'study', or GRID/RECIPE.")
        return from_toml(path.read_text(), where=str(path))
    if "/" in text:
        grid, _, recipe = text.rpartition("/")
        return load_grid(grid).recipe(recipe)
    shipped = RECIPES_DIR / f"{text}.toml"
    if shipped.is_file():
        return from_toml(shipped.read_text(), where=shipped.name)
    raise RecipeError(f"Unknown recipe {text!r}: give 'study', a PATH.toml with a [recipe] table, or GRID/RECIPE "
                      f"with a shipped grid: {', '.join(shipped_grids())}.")
