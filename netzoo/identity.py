"""What a results folder holds stays one thing: one dataset, and one architecture per network name and recipe.

``DIR/dataset.json`` records the dataset the first time anything trains into the folder (name, input shape,
classes, split sizes, and the sha256 of the train and test labels); ``DIR/jobs/<recipe_hash>.json`` records
each planned network's ``arch_id``, the zoo and the sha256 of each network's file. A job whose dataset or whose
networks differ from what the folder holds, or whose zoo lacks or changed the files of networks trained under its
recipe, is refused with one line naming the first conflict and the fix (a new ``--results``). A sweep's variant zoos
(dropout, batch norm) change networks under other recipes, so they never conflict.

The functions take a ``netzoo.jobs.TrainJob`` (its results, zoo, dataset, recipe and seeds).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from netzoo import files
from netzoo import results as res
from netzoo.datasets import indices_sha256
from netzoo.errors import ResultsError

log = logging.getLogger(__name__)


def _refuse_architecture(job, network: str, trained: str, zoo_arch: str) -> None:
    raise ResultsError(
        f"{job.results} holds {network} under recipe {job.recipe.name!r} ({job.recipe.hash}) as architecture "
        f"{trained}, but zoo {job.zoo}'s {network} is architecture {zoo_arch}. A results folder holds one "
        f"architecture per network name and recipe: pass a new --results for this zoo (or train the zoo that "
        f"made these results).")


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (flock: processes on one host, and NFS clients on Linux) while inside."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)  # empty: it only carries the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_zoo(job, zoo_files: dict[str, str]) -> None:
    """Refuse a job whose zoo lacks, or holds other files for, networks DIR/jobs records as trained under its
    recipe (``zoo_files``: name -> sha256 of each file of the job's zoo, from its manifest): the trained
    networks' code must stay loadable (``results.load_network``, ``netzoo export``). The same files in another
    folder (a moved or copied zoo) are that zoo; a regenerated zoo whose files changed is not."""
    try:
        record = res.read_record(job.results / "jobs" / f"{job.recipe.hash}.json") or {}
    except ResultsError:
        return  # damaged: record_job rewrites it from this run
    _check_same_zoo(job, record, zoo_files)


def _check_same_zoo(job, record: dict, zoo_files: dict[str, str]) -> None:
    trained_from, recorded = record.get("zoo"), record.get("files") or {}
    differ = [name for name, sha256 in recorded.items() if zoo_files.get(name) != sha256]
    if trained_from and differ:
        what = "lacks" if differ[0] not in zoo_files else "holds another file for"
        same = trained_from == str(Path(job.zoo).resolve())
        raise ResultsError(
            f"{job.results} holds recipe {job.recipe.name!r} ({job.recipe.hash}) trained from the files of zoo "
            f"{trained_from}{' as it was then' if same else ''}; zoo {job.zoo} {what} {differ[0]} ({len(differ)} "
            f"of {len(recorded)} networks differ). A results folder keeps the code its networks were trained "
            f"from: train the zoo that made these results, or pass a new --results for this zoo.")


def record_job(job, architectures: dict[str, str], zoo_files: dict[str, str]) -> None:
    """Write DIR/recipes/<hash>.json and DIR/jobs/<hash>.json (zoo, dataset, planned networks and seeds, each
    network's arch_id and the sha256 of its file), which ``netzoo status`` reads to count what is left, ``plan``
    to refuse a network name that meant another architecture (or another zoo) under this recipe, and
    ``results.load_network`` and ``netzoo export`` to find the code of a trained network. Records of several
    runs merge (under a lock); a damaged record is rewritten from this run. ``zoo_files``: name -> sha256 of
    each file of the job's zoo (its manifest's file_sha256)."""
    recipe = job.recipe
    files.atomic_write_text(job.results / "recipes" / f"{recipe.hash}.json", recipe.to_json())
    names = list(architectures)
    path = job.results / "jobs" / f"{recipe.hash}.json"
    with _locked(job.results / "jobs" / ".lock"):
        try:
            old = res.read_record(path) or {}
        except ResultsError as exc:
            log.warning("%s; rewriting it from this run", exc)
            old = {}
        recorded = old.get("arch_ids") or {}
        for name in names:
            if recorded.get(name, architectures[name]) != architectures[name]:
                _refuse_architecture(job, name, recorded[name], architectures[name])
        _check_same_zoo(job, old, zoo_files)  # again under the lock: another run may have recorded meanwhile
        record = {"zoo": str(Path(job.zoo).resolve()), "dataset": job.dataset, "recipe": recipe.name,
                  "recipe_hash": recipe.hash,
                  "seeds": sorted(set(old.get("seeds", [])) | set(job.seeds)),
                  "networks": list(dict.fromkeys(old.get("networks", []) + names)),
                  "arch_ids": {**recorded, **architectures},
                  "files": {**(old.get("files") or {}), **{name: zoo_files[name] for name in names}}}
        files.atomic_write_text(path, json.dumps(record, indent=1))


def dataset_identity(data) -> dict:
    """What tells two datasets apart in DIR/dataset.json: name, input shape, classes, split sizes, and the
    sha256 of the train and test labels in order (the split's fingerprint: the same files, split the same way)."""
    digest = hashlib.sha256()
    for labels in (data.y_train, data.y_test):
        digest.update(labels.cpu().numpy().astype("<i8").tobytes())
    return {"name": data.name, "input_shape": "x".join(map(str, data.input_shape)), "classes": data.classes,
            "train_size": int(data.x_train.shape[0]), "test_size": int(data.x_test.shape[0]),
            "fingerprint": f"sha256:{digest.hexdigest()}"}


def describe_dataset(record: dict) -> str:
    """'digits (1x8x8, 10 classes, 1437 train / 360 test, labels sha256:3f2a91c0)'."""
    fingerprint = str(record.get("fingerprint", "?")).removeprefix("sha256:")[:8]
    return (f"{record.get('name')} ({record.get('input_shape')}, {record.get('classes')} classes, "
            f"{record.get('train_size')} train / {record.get('test_size')} test, labels sha256:{fingerprint})")


def check_dataset(job, data) -> None:
    """Record the dataset in DIR/dataset.json the first time (created whole, once, even by racing runs);
    afterwards refuse another dataset, naming both."""
    path = job.results / "dataset.json"
    mine = {**data.describe(), **dataset_identity(data)}
    text = json.dumps(mine, indent=1).encode()
    try:
        recorded = res.dataset_record(job.results)
    except ResultsError as exc:
        log.warning("%s; rewriting it", exc)
        files.atomic_write(path, lambda f: f.write(text))
        return
    if recorded is None:
        if files.atomic_create(path, lambda f: f.write(text)):
            return
        recorded = res.dataset_record(job.results) or {}
    differ = [f for f in ("name", "input_shape", "classes", "train_size", "test_size", "fingerprint")
              if f in recorded and recorded[f] != mine[f]]
    if differ:
        raise ResultsError(f"{job.results} holds {describe_dataset(recorded)}; this run trains on "
                           f"{describe_dataset(mine)}. A results folder holds one dataset: pass a new --results "
                           f"(e.g. --results results/{job.dataset}).")


def _saved_indices(path: Path):
    """The int64 indices a .npy file holds, None when it is missing or unreadable."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def _indices_sha256(path: Path) -> str | None:
    """``datasets.indices_sha256`` of the indices a .npy file holds, None when it is missing or unreadable."""
    indices = _saved_indices(path)
    return None if indices is None else indices_sha256(indices)


def record_split(results_dir, split) -> Path:
    """Record a validation split (``netzoo.datasets.ValidationSplit``) in DIR/splits/<name>.json (sizes, seed,
    class counts, the sha256 of the held-out indices) and its indices in DIR/splits/<name>.npy, the first time;
    afterwards refuse a split that holds out other samples under the same name (another scikit-learn may draw
    others), naming both. A missing or damaged .npy of a matching split is written again. Returns the record's path.

    The full dataset stays what DIR/dataset.json records; the split is per recipe (a folder may hold recipes with
    and without one), so every recipe that holds out the same fraction shares one record."""
    folder = Path(results_dir) / "splits"
    path, npy = folder / f"{split.name}.json", folder / f"{split.name}.npy"
    mine = split.record()
    try:
        recorded = res.read_record(path)
    except ResultsError as exc:
        log.warning("%s; rewriting it", exc)
        recorded = None
        path.unlink(missing_ok=True)
    if recorded is not None and (recorded.get("indices_sha256"), recorded.get("dataset")) != (split.sha256,
                                                                                                split.dataset):
        raise ResultsError(f"{path} records another validation split of {recorded.get('dataset')} (indices "
                           f"sha256:{str(recorded.get('indices_sha256'))[:8]}) than this run draws for {split.dataset} "
                           f"(sha256:{split.sha256[:8]}): scikit-learn may draw it differently here. Pass a new "
                           f"--results, or train with the scikit-learn that wrote this folder.")
    if _indices_sha256(npy) != split.sha256:  # the indices first: the record names them
        import numpy as np

        files.atomic_write(npy, lambda f: np.save(f, split.indices, allow_pickle=False))
    if recorded is None and not files.atomic_create(path, lambda f: f.write(json.dumps(mine, indent=1).encode())):
        return record_split(results_dir, split)  # another run created it meanwhile: check it against this one
    return path


def check_split(results_dir, data, fraction: float):
    """The positions ``fraction`` of ``data``'s training split holds out in this folder (int64, ascending): read
    from DIR/splits/ when recorded and whole (no scikit-learn import: a worker reads what the plan drew), else
    drawn (``Dataset.with_validation``) and recorded (``record_split``, which refuses another split under the
    same name). None for fraction 0. ``data``: the full dataset."""
    from netzoo.datasets import split_name

    if not fraction:
        return None
    folder = Path(results_dir) / "splits"
    name = split_name(fraction)
    try:
        record = res.read_record(folder / f"{name}.json")
    except ResultsError:
        record = None
    saved = _saved_indices(folder / f"{name}.npy") if record is not None and record.get("dataset") == data.name \
        else None
    if saved is not None and indices_sha256(saved) == record.get("indices_sha256"):
        return saved
    split = data.with_validation(fraction).validation
    record_split(results_dir, split)
    return split.indices


def check_folder(job, architectures: dict[str, str], found: res.Scan) -> None:
    """Refuse a job whose dataset, or whose networks' ``architectures`` (name -> arch_id in its zoo), differ
    from the networks rows the folder already holds under the job's recipe."""
    trained = {}
    for key, row in found.rows.items():
        trained.setdefault(key[:2], row)
        if row["dataset"] != job.dataset and found.complete.get(key) is not None:
            raise ResultsError(f"{job.results} holds networks trained on {row['dataset']} (e.g. {key[0]}); this "
                               f"run trains on {job.dataset}. A results folder holds one dataset: pass a new "
                               f"--results (e.g. --results results/{job.dataset}).")
    for network, arch_id in architectures.items():
        row = trained.get((network, job.recipe.hash))
        if row is not None and row["arch_id"] != arch_id:
            _refuse_architecture(job, network, row["arch_id"], arch_id)
