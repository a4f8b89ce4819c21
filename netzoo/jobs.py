"""What to train: a TrainJob (zoo, dataset, recipe, seeds, networks, where results go), its keys, and its plan.

``TrainJob`` is a plain frozen dataclass: build it with its fields (the CLI's parsing of strings lives in
``netzoo.cli``); its ``__post_init__`` checks what it can alone (seeds, workers, the dataset's name).
``plan(job)`` checks the job against the zoo (input shape, classes, template options) and against what the
results folder holds (one dataset, one architecture per network name and recipe: ``netzoo.identity``), records
the job, moves damaged files aside, and lists the Tasks whose keys are not whole yet, this process's shard first
(``netzoo.shards``). Nothing here trains: executors (``netzoo.executors``) train the tasks, and ``Outcome`` is
what they report for each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from netzoo import results as res
from netzoo.claims import held_keys
from netzoo.compact import drop_keys
from netzoo.datasets import cached_dataset, dataset_info, validation_indices
from netzoo.errors import NetzooError, RecipeError, ShapeMismatchError, UnknownNetworkError
from netzoo.grouping import FUSE_MODES
from netzoo.identity import check_dataset, check_folder, check_split, check_zoo, record_job
from netzoo.recipe import Recipe
from netzoo.shards import in_turn, own_share
from netzoo.weights import SAVE_WEIGHTS, WEIGHTS_DTYPES
from netzoo.zoo import check_files, manifest_rows, matching, natural_key

MAX_SEED = 2**63 - 1  # seeds are stored as int64; torch.manual_seed takes up to 2**64 - 1


def check_seeds(seeds) -> tuple[int, ...]:
    """The training seeds, each once, in order; a NetzooError for one outside 0 … 2**63 - 1."""
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise NetzooError(f"--seeds {seed}: a training seed is an integer from 0 to {MAX_SEED} (seeds are "
                              f"stored as int64 and seed torch's generators); pick one "
                              f"{'from 0 up' if seed < 0 else 'below that'}.")
    return seeds


@dataclass(frozen=True)
class TrainJob:
    """Everything ``netzoo train`` was asked to do (picklable: executors ship it to other processes)."""

    zoo: Path                           # folder written by netzoo generate
    results: Path                       # results folder
    dataset: str = "digits"             # digits, mnist, fashion-mnist, kmnist
    data_root: Path | None = None       # folder holding torchvision's dataset folders
    download: bool = False
    recipe: Recipe = field(default_factory=Recipe)
    seeds: tuple[int, ...] = (42,)      # each network trains once per seed
    networks: str | None = None         # GLOB[,GLOB…]; None = all
    shard: tuple[int, int] | None = None  # (i, N), 1-based: the share this process starts with
    workers: int | None = None          # worker processes; None = one per GPU, or the fastest CPU split
    devices: tuple[str, ...] = ("cpu",)
    threads: int | None = None          # torch intra-op threads per worker; None = cores / workers
    executor: str = "local"             # local or ray
    address: str | None = None          # Ray cluster address
    gpus_per_task: float | None = None  # Ray: GPU share per task
    lenses: bool = True                 # record the layers table (netzoo.lenses)
    quiet: bool = False
    save_weights: str = "last"          # the state dicts kept: after the last epoch, every epoch, or none
    weights_dtype: str = "float32"      # float32 or float16 (of the floating-point tensors)
    fuse: str = "auto"                  # auto: a network's runs train as one fused group where it pays; off: alone
    cuda_graphs: bool = True            # CUDA: replay each full-size training step from a CUDA graph (netzoo.graphs)
    # A sweep's (recipe, zoo) pairs, trained as one job so that a network's runs under several recipes can share a
    # group (netzoo.grouping); empty: the job's one recipe on its one zoo. ``recipe`` and ``zoo`` are the first's.
    sweep: tuple[tuple[Recipe, Path], ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once
        set_(self, "zoo", Path(self.zoo))
        set_(self, "results", Path(self.results))
        set_(self, "data_root", Path(self.data_root) if self.data_root else None)
        set_(self, "seeds", check_seeds(self.seeds))
        set_(self, "devices", tuple(self.devices))
        if not self.seeds:
            raise NetzooError("--seeds: give at least one training seed, e.g. --seeds 42.")
        if self.workers is not None and self.workers < 1:
            raise NetzooError(f"--workers must be >= 1, got {self.workers}.")
        if self.fuse not in FUSE_MODES:
            raise NetzooError(f"--fuse {self.fuse!r}: allowed {', '.join(FUSE_MODES)}.")
        if self.sweep:
            set_(self, "sweep", tuple((recipe, Path(zoo)) for recipe, zoo in self.sweep))
            set_(self, "recipe", self.sweep[0][0])
            set_(self, "zoo", self.sweep[0][1])
            hashes = [recipe.hash for recipe, _ in self.sweep]
            if len(set(hashes)) < len(hashes):
                raise RecipeError("a job's recipes must differ: two of them have the same hash.")
        dataset_info(self.dataset)  # unknown names stop here, with the known ones listed
        if self.save_weights not in SAVE_WEIGHTS or self.weights_dtype not in WEIGHTS_DTYPES:
            raise NetzooError(f"--save-weights {self.save_weights!r} --weights-dtype {self.weights_dtype!r}: allowed "
                              f"{'|'.join(SAVE_WEIGHTS)} and {'|'.join(WEIGHTS_DTYPES)}.")

    def parts(self) -> list[TrainJob]:
        """One job per recipe (``sweep``), each with its one recipe and zoo; [self] for a job of one recipe."""
        if not self.sweep:
            return [self]
        return [dataclasses.replace(self, recipe=recipe, zoo=zoo, sweep=()) for recipe, zoo in self.sweep]

    def part(self, recipe_hash: str) -> TrainJob:
        """The one-recipe job of ``parts()`` whose recipe has this hash (a Task's ``recipe_hash``); KeyError if none."""
        if not self.sweep and recipe_hash == self.recipe.hash:
            return self
        for recipe, zoo in self.sweep:
            if recipe.hash == recipe_hash:
                return dataclasses.replace(self, recipe=recipe, zoo=zoo, sweep=())
        raise KeyError(f"recipe {recipe_hash} is not one of this job's")


@dataclass(frozen=True)
class Task:
    """One training run: a network under the job's recipe with one seed."""

    network: str
    seed: int
    recipe_hash: str
    share: int = 0  # 0: this process's own shard; k: the k-th shard after it, helped once its own is done

    @property
    def key(self) -> tuple[str, str, int]:
        """(network, recipe_hash, seed), the key of every results row."""
        return (self.network, self.recipe_hash, self.seed)


@dataclass
class Outcome:
    """What became of one Task: status done/diverged/failed/stopped_early, or skipped (complete or claimed)."""

    network: str
    seed: int
    status: str
    epochs_done: int = 0
    error: str | None = None
    wall_time_s: float = 0.0
    recipe_hash: str | None = None  # the Task's (a job may hold several recipes)

    @property
    def key(self) -> tuple[str, str | None, int]:
        """(network, recipe_hash, seed), as the Task's."""
        return (self.network, self.recipe_hash, self.seed)


def check_fits(job: TrainJob, names: list[str]) -> None:
    """Refuse a zoo whose input shape or classes do not fit the dataset, or a recipe the zoo was not built for."""
    info = dataset_info(job.dataset)
    rows = manifest_rows(job.zoo)
    want = "x".join(map(str, info.input_shape))
    for name in names:
        row = rows[name]
        if row["input_shape"] != want or row["classes"] != info.classes:
            raise ShapeMismatchError(
                f"Zoo {job.zoo} expects {row['input_shape']} inputs with {row['classes']} classes ({name}); "
                f"{job.dataset} gives {want} with {info.classes} classes. "
                f"Run: netzoo generate --dataset {job.dataset} --out zoo/{job.dataset}")
        if (row["dropout"] or 0.0) != job.recipe.dropout or bool(row["batch_norm"]) != job.recipe.batch_norm:
            raise RecipeError(
                f"Recipe {job.recipe.name!r} asks for dropout={job.recipe.dropout}, batch_norm={job.recipe.batch_norm} "
                f"but zoo {job.zoo} was generated with dropout={row['dropout']}, batch_norm={row['batch_norm']} "
                f"({name}): dropout and batch norm are template options. Run: netzoo generate --out DIR "
                f"--dataset {job.dataset} with the same dropout/batch_norm (generate_zoo(dropout=…, batch_norm=…)), "
                f"or train with a recipe that matches the zoo.")


def all_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """Every key of the job, all shards together, in a fixed order (network natural order, then recipe in the
    job's order, then seed): the zoo's networks matching ``--networks`` GLOB[,GLOB…] (netzoo.zoo.matching), an
    UnknownNetworkError when none does."""
    if job.sweep:
        keys = [(k, i) for i, part in enumerate(job.parts()) for k in _recipe_keys(part)]
        seeds = {seed: i for i, seed in enumerate(job.seeds)}
        return [k for k, _ in sorted(keys, key=lambda ki: (natural_key(ki[0][0]), ki[1], seeds[ki[0][2]]))]
    return _recipe_keys(job)


def _recipe_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """The keys of a job of one recipe (see all_keys)."""
    names = matching(manifest_rows(job.zoo), (job.networks or "").split(","))
    if not names:
        every = matching(manifest_rows(job.zoo), [])
        raise UnknownNetworkError(f"--networks {job.networks!r} matches no network of {job.zoo} "
                                  f"(e.g. {', '.join(every[:3])}); see: netzoo zoo list --zoo {job.zoo}")
    check_fits(job, names)
    return [(name, job.recipe.hash, seed) for name in names for seed in job.seeds]


def shard_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """The keys of this process's own share: every N-th key of the sorted plan for shard i/N (all without one)."""
    return own_share(all_keys(job), job.shard)


def plan(job: TrainJob) -> list[Task]:
    """The Tasks of ``job`` whose keys are not whole yet: this process's shard first, then the others'.

    Checks the zoo's files against the sha256 their manifest records, the zoo against the dataset and recipe,
    and against the folder (one dataset, recorded in DIR/dataset.json; one architecture per network name and
    recipe), records the job (DIR/jobs/, DIR/recipes/) and the recipe's validation split (DIR/splits/), and
    moves damaged files out of the way (DIR/damaged/; their keys are planned again, their other rows taken
    out of compact files).
    A shard i/N is where a process starts, not a fence: after every N-th key of the sorted plan from the
    i-th, it takes any key left, so whatever set of shards runs, the whole plan gets trained.
    """
    if Path(job.results).exists():
        res.results_folder(job.results)  # a file there is refused; a new folder is made once the checks pass
    keys = all_keys(job)
    found = res.scan(job.results)
    parts = job.parts()
    architectures, zoo_files = [], []
    for part in parts:  # one check per recipe, each against its own zoo
        rows = manifest_rows(part.zoo)
        names = dict.fromkeys(k[0] for k in keys if k[1] == part.recipe.hash)
        architectures.append({name: rows[name]["arch_id"] for name in names})
        zoo_files.append({name: row.get("file_sha256") for name, row in rows.items()})
        check_files(part.zoo, architectures[-1])  # an edited file is refused before anything trains
        check_folder(part, architectures[-1], found)
        check_zoo(part, zoo_files[-1])  # the recipe's networks were trained from this zoo's files
    data = cached_dataset(job.dataset, job.data_root, job.download, job.devices[0])
    for part in parts:  # a validation fraction the dataset cannot split is refused before anything is written
        if part.recipe.validation:
            validation_indices(data.y_train.cpu().numpy(), part.recipe.validation)
    res.results_folder(job.results, create=True)
    check_dataset(job, data)
    for part, recorded, part_files in zip(parts, architectures, zoo_files):  # one record and split per recipe
        check_split(job.results, data, part.recipe.validation)  # drawn once per folder
        record_job(part, recorded, part_files)
    held = held_keys(job.results)
    res.quarantine(job.results, found.problems, keep=held)
    again = set(keys) - held  # a planned key that is not whole is trained again: its old rows leave compact files
    drop_keys(job.results, {p.key for p in found.problems if p.key in again})
    return [Task(network, seed, recipe_hash, share) for share, (network, recipe_hash, seed) in in_turn(keys, job.shard)
            if (network, recipe_hash, seed) not in found.complete]
