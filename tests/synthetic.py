"""Small synthetic result tables, conforming to netzoo/schema.py, whose exam answers are known by construction.

- ``make_zoo()``: a population with planted answers: samples WEIRD (every run answers label+1), CONFUSING
  (votes spread over all classes), EASY (every run is right), a planted best network and late bloomers.
- ``from_predictions()``: consistent networks/epochs/predictions tables from a prediction array per run.
- ``from_curves()``: networks and epochs tables from hand-written metric curves (no predictions).
- ``stop_runs()``: the same tables with some runs diverged (null predictions and accuracies at the epoch they
  diverged, no later epochs, as netzoo train writes them) or failed.
- ``write_results()``: the tables as a results folder (``DIR/<table>/compact-synthetic.parquet``), checked by
  schema.conform, that netzoo.results.load reads.
Other helpers may reuse it: nothing here depends on the analysis code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from netzoo import schema

FAMILIES = ["Linear", "Conv1d", "Conv2d", "Conv3d", "Conv1dThenLinear", "Conv2dThenLinear",
            "Conv3dThenLinear", "ResNetStyle"]
ACTIVATIONS = ["None", "ReLU", "SELU", "Sigmoid", "Tanh"]
WEIRD = [0, 1, 2]          # every run answers (label + 1) % K at the last epoch
CONFUSING = [3, 4]         # run r answers r % K: no class has a majority
EASY = [5, 6, 7, 8, 9]     # every run is right
RECIPE_HASH = "0123456789abcdef"
_NAME = re.compile(r"^(?P<family>.+?)(?P<activation>None|ReLU|SELU|Sigmoid|Tanh)_\d+$")


@dataclass
class Synthetic:
    """Synthetic tables plus what was planted in them."""

    networks: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    layers: pd.DataFrame
    planted: dict = field(default_factory=dict)


def family_activation(network: str) -> tuple[str, str]:
    """('Conv2d', 'ReLU') from 'Conv2dReLU_3'; Basic is ('Basic', 'None')."""
    match = _NAME.match(network)
    return (match["family"], match["activation"]) if match else (network, "None")


def networks_frame(meta: pd.DataFrame, epochs: int, classes: int, recipe: str = "default",
                   recipe_hash: str = RECIPE_HASH, dataset: str = "digits") -> pd.DataFrame:
    """Every column of schema.NETWORKS for runs described by ``meta`` (network, seed, optional costs)."""
    n = len(meta)
    rng = np.random.default_rng(0)
    defaults = {
        "family": [family_activation(x)[0] for x in meta["network"]],
        "activation": [family_activation(x)[1] for x in meta["network"]],
        "depth": np.full(n, 2), "params": rng.integers(100, 100_000, n), "memory": rng.integers(50, 5000, n),
        "ops": rng.integers(5, 60, n), "macs": rng.integers(100, 100_000, n),
        "flops_forward": rng.integers(200, 200_000, n), "flops_train_step": rng.integers(600, 600_000, n),
        "train_time_s": rng.uniform(0.5, 20, n),
    }
    frame = meta.copy()
    for column, values in defaults.items():
        if column not in frame.columns:
            frame[column] = values
    frame["arch_id"] = frame["network"].map(lambda x: f"{abs(hash(x)) % 16**12:012x}")
    frame["file"] = frame["network"] + ".py"
    frame["file_sha256"] = "0" * 64
    frame["template"] = frame["family"].str.lower() + ".py.j2"
    frame["input_shape"] = "1x8x8"
    frame["classes"] = classes
    for column in ("layer_types", "widths", "kernel_sizes", "biases", "activations_after", "weights_epochs",
                   "weights_sha256"):
        frame[column] = [[] for _ in range(n)]
    frame = frame.assign(weights_file=None, weights_bytes=None, weights_dtype=None)  # saved without weights
    frame = frame.assign(dropout=0.0, batch_norm=False, hparams="{}", spec="synthetic", spec_hash="0" * 64,
                         zoo_seed=0, recipe=recipe, recipe_hash=recipe_hash,
                         recipe_json=json.dumps({"name": recipe, "epochs": epochs}), dataset=dataset,
                         status="done", error=None, epochs_done=epochs, batch_size_used=25, last_batch_merged=False,
                         oom_retries=0, fused_runs=1,
                         eval_time_s=0.01 * epochs, peak_memory_bytes=None, device="cpu", threads=1,
                         worker="synthetic:0", netzoo_version="0.1.0", git_commit=None, torch_version="2.15",
                         finished_at=pd.Timestamp("2026-01-01", tz="UTC"))
    frame["wall_time_s"] = frame["train_time_s"] + frame["eval_time_s"]
    frame["seed"] = frame["seed"].astype("int64")
    return frame[schema.NETWORKS.names].reset_index(drop=True)


def from_predictions(meta: pd.DataFrame, preds: np.ndarray, labels: np.ndarray, classes: int,
                     probs: np.ndarray | None = None, recipe: str = "default",
                     recipe_hash: str = RECIPE_HASH, dataset: str = "digits") -> Synthetic:
    """Tables for R runs (``meta``: network, seed, optional costs) with ``preds`` (R, E, N) predicted classes
    on N test samples with ``labels``; probabilities default to 0.9 on the prediction. Metrics follow."""
    runs, n_epochs, n = preds.shape
    if probs is None:
        probs = np.full((runs, n_epochs, n, classes), 0.1 / (classes - 1), dtype=np.float32)
        np.put_along_axis(probs, preds[..., None], 0.9, axis=-1)
    correct = preds == labels                                                     # (R, E, N)
    present = [k for k in range(classes) if np.any(labels == k)]  # recall of an absent class is undefined
    recall = np.stack([correct[..., labels == k].mean(-1) if k in present else np.full(preds.shape[:2], np.nan)
                       for k in range(classes)], -1)  # (R, E, K)
    p_label = np.take_along_axis(probs, np.broadcast_to(labels, preds.shape)[..., None], -1)[..., 0]
    nets = networks_frame(meta, n_epochs, classes, recipe, recipe_hash, dataset)
    epoch_time = nets["train_time_s"].to_numpy() / n_epochs
    key = {"network": np.repeat(nets["network"].to_numpy(), n_epochs), "recipe": recipe,
           "recipe_hash": recipe_hash, "seed": np.repeat(nets["seed"].to_numpy(), n_epochs)}
    epoch = np.tile(np.arange(1, n_epochs + 1), runs)
    test_acc = correct.mean(-1).ravel()
    epochs = pd.DataFrame({**key, "epoch": epoch, "status": "done",
                           "train_loss": -np.log(np.clip(p_label, 1e-6, 1)).mean(-1).ravel() * 0.9,
                           "train_acc": np.clip(test_acc + 0.02, 0, 1),
                           "test_loss": -np.log(np.clip(p_label, 1e-6, 1)).mean(-1).ravel(),
                           "test_acc": test_acc, "test_balanced_acc": np.nanmean(recall, -1).ravel(),
                           "val_loss": np.nan, "val_acc": np.nan, "val_balanced_acc": np.nan,  # no validation split
                           "epoch_time_s": np.repeat(epoch_time, n_epochs),
                           "train_time_s": np.repeat(epoch_time, n_epochs) * epoch, "eval_time_s": 0.01,
                           "lr": 0.002})
    for k in range(classes):
        epochs[f"test_acc_class_{k}"] = recall[..., k].ravel()
    rows = runs * n_epochs * n
    predictions = pd.DataFrame({
        "network": np.repeat(nets["network"].to_numpy(), n_epochs * n), "recipe": recipe,
        "recipe_hash": recipe_hash, "seed": np.repeat(nets["seed"].to_numpy(), n_epochs * n),
        "epoch": np.tile(np.repeat(np.arange(1, n_epochs + 1), n), runs),
        "sample": np.tile(np.arange(n), runs * n_epochs), "label": np.tile(labels, runs * n_epochs),
        "pred": preds.ravel().astype("int64"),
        "probs": list(probs.reshape(rows, classes).astype(np.float16))})
    return Synthetic(nets, epochs, predictions, pd.DataFrame(columns=schema.LAYERS.names))


def make_zoo(per_cell: int = 2, families=FAMILIES, activations=ACTIVATIONS, epochs: int = 4,
             samples: int = 360, classes: int = 10, seeds=(42,), seed: int = 0) -> Synthetic:
    """A population with planted answers (see ``planted``): weird, confusing and easy samples, the best
    network (no error on ordinary samples at the last epoch), late bloomers (bad in epochs 1-2, near-best
    at the end). Ordinary samples always have a correct majority and at least one wrong run."""
    rng = np.random.default_rng(seed)
    names = ["Basic"] + [f"{f}{a}_{i}" for f in families for a in activations for i in range(per_cell)]
    best, bloomers = names[1], names[2:4]
    meta = pd.DataFrame({"network": np.repeat(names, len(seeds)), "seed": np.tile(seeds, len(names))})
    runs, labels = len(meta), np.arange(samples) % classes
    family_rank = {f: i / max(len(families), 1) for i, f in enumerate(families)}
    base = np.array([0.12 if n == "Basic" else 0.01 + 0.2 * family_rank[family_activation(n)[0]]
                     for n in meta["network"]])
    rate = np.clip(base + rng.uniform(0, 0.06, runs), 0, 0.3)               # last-epoch error rate
    rate[meta["network"].isin([best]).to_numpy()] = 0.0
    rate[meta["network"].isin(bloomers).to_numpy()] = 0.02
    ordinary = np.arange(len(WEIRD + CONFUSING + EASY), samples)
    s_ord, offsets = len(ordinary), (np.arange(runs) * len(ordinary)) // runs
    preds = np.empty((runs, epochs, samples), dtype=np.int64)
    for e in range(1, epochs + 1):
        late = meta["network"].isin(bloomers).to_numpy()
        r_e = np.where(late & (e <= 2), 0.6, np.clip(rate * (1 + 0.5 * (epochs - e)), 0, 0.9))
        # Wrong window of run r: ordinary positions within r_e*S of its offset; at the last epoch windows
        # are at least 2S/R long (so every sample has a wrong run) except the best's, and at most 0.3S.
        length = np.round(r_e * s_ord).astype(int)
        if e == epochs:
            length = np.where(rate > 0, np.maximum(length, int(np.ceil(2 * s_ord / runs))), 0)
        position = (np.arange(s_ord)[None, :] - offsets[:, None]) % s_ord
        wrong = position < length[:, None]
        wrong_class = (labels[ordinary][None, :] + 1 + (np.arange(runs)[:, None] % (classes - 1))) % classes
        preds[:, e - 1, ordinary] = np.where(wrong, wrong_class, labels[ordinary][None, :])
        preds[:, e - 1, EASY] = labels[EASY]
        preds[:, e - 1, WEIRD] = (labels[WEIRD] + 1) % classes
        preds[:, e - 1, CONFUSING] = (np.arange(runs) % classes)[:, None]
    costs = pd.DataFrame({"params": (10 ** rng.uniform(2, 6, runs)).astype("int64"),
                          "memory": (10 ** rng.uniform(1.5, 4, runs)).astype("int64"),
                          "ops": rng.integers(4, 80, runs), "train_time_s": 10 ** rng.uniform(-0.5, 1.5, runs)})
    synthetic = from_predictions(pd.concat([meta, costs], axis=1), preds, labels, classes)
    votes_wrong = (preds[:, -1, ordinary] != labels[ordinary]).sum(0)
    if votes_wrong.min() < 1 or votes_wrong.max() * 2 >= runs:
        raise ValueError(f"{runs} runs are too few to plant ordinary samples; use per_cell >= 2")
    synthetic.planted = {"weird": WEIRD, "confusing": CONFUSING, "easy": EASY, "best": best,
                         "late_bloomers": bloomers}
    return synthetic


def from_curves(curves: dict, costs: dict | None = None, classes: int = 3, class_acc: dict | None = None,
                recipe: str = "default", recipe_hash: str = RECIPE_HASH) -> Synthetic:
    """Networks and epochs tables from hand-written metric curves: {network or (network, seed): [metric at
    epoch 1, 2, ...]}; ``costs``: {network: {column: value}}; ``class_acc``: {network: [recall per class]}
    at the last epoch (default: every class at the curve's value). test_acc equals the balanced metric."""
    keys = [(k, 42) if isinstance(k, str) else k for k in curves]
    meta = pd.DataFrame(keys, columns=["network", "seed"])
    for column in {c for values in (costs or {}).values() for c in values}:
        meta[column] = [(costs or {}).get(n, {}).get(column, np.nan) for n in meta["network"]]
    n_epochs = max(len(v) for v in curves.values())
    nets = networks_frame(meta, n_epochs, classes, recipe, recipe_hash)
    rows = []
    for (network, seed), values in zip(keys, curves.values()):
        for epoch, value in enumerate(values, start=1):
            recalls = (class_acc or {}).get(network) if epoch == len(values) else None
            recalls = recalls if recalls is not None else [value] * classes
            row = {"network": network, "recipe": recipe, "recipe_hash": recipe_hash, "seed": seed,
                   "epoch": epoch, "status": "done", "train_loss": 1 - value, "train_acc": value,
                   "test_loss": 1 - value, "test_acc": value, "test_balanced_acc": float(np.mean(recalls)),
                   "val_loss": np.nan, "val_acc": np.nan, "val_balanced_acc": np.nan,  # no validation split
                   "epoch_time_s": 1.0, "train_time_s": float(epoch), "eval_time_s": 0.01, "lr": 0.002}
            row.update({f"test_acc_class_{k}": recalls[k] for k in range(classes)})
            rows.append(row)
    return Synthetic(nets, pd.DataFrame(rows), pd.DataFrame(columns=schema.PREDICTIONS.names),
                     pd.DataFrame(columns=schema.LAYERS.names))


def stop_runs(synthetic: Synthetic, runs, status: str = "diverged", at_epoch: int = 1) -> Synthetic:
    """``synthetic`` with ``runs`` [(network, seed), ...] ending ``status`` at ``at_epoch``, as netzoo train
    records them: ``diverged``: that epoch's row has status diverged, NaN losses and null accuracies, its
    predictions null pred and probs, and no later epochs; ``failed``: epochs up to ``at_epoch`` kept as done
    (the exception came later), no later ones. The networks rows get the status and epochs_done."""
    runs = {(n, int(s)) for n, s in runs}
    networks, epochs, predictions = synthetic.networks.copy(), synthetic.epochs.copy(), synthetic.predictions.copy()

    def hit(frame: pd.DataFrame) -> pd.Series:
        return pd.Series([(n, int(s)) in runs for n, s in zip(frame["network"], frame["seed"])], index=frame.index)

    mine = hit(networks)
    networks.loc[mine, "status"] = status
    networks.loc[mine, "epochs_done"] = at_epoch
    keep = ~(hit(epochs) & (epochs["epoch"] > at_epoch))
    epochs = epochs[keep].copy()
    keep = ~(hit(predictions) & (predictions["epoch"] > at_epoch)) if len(predictions) else None
    predictions = predictions[keep].copy() if keep is not None else predictions
    if status == "diverged":
        last = hit(epochs) & (epochs["epoch"] == at_epoch)
        accuracies = ["train_acc", "test_acc", "test_balanced_acc"] + [c for c in epochs
                                                                       if c.startswith("test_acc_class_")]
        epochs.loc[last, "status"] = "diverged"
        epochs.loc[last, ["train_loss", "test_loss"]] = np.nan
        epochs.loc[last, accuracies] = np.nan
        if len(predictions):
            predictions["pred"] = predictions["pred"].astype("Int64")
            gone = hit(predictions) & (predictions["epoch"] == at_epoch)
            predictions.loc[gone, "pred"] = pd.NA
            predictions["probs"] = [None if g else p for g, p in zip(gone, predictions["probs"])]
    return Synthetic(networks, epochs.reset_index(drop=True), predictions.reset_index(drop=True),
                     synthetic.layers, dict(synthetic.planted))


def write_results(tables, results_dir: Path) -> Path:
    """Write the tables as a results folder that netzoo.results.load reads (one part file per table)."""
    results_dir = Path(results_dir)
    classes = int(tables.networks["classes"].iloc[0])
    for name in schema.TABLES:
        frame = getattr(tables, name)
        if frame is None or frame.empty:
            continue
        (results_dir / name).mkdir(parents=True, exist_ok=True)
        # one compact file per table, as netzoo compact writes them: netzoo.results.load reads those
        pq.write_table(schema.conform(frame, schema.table_schema(name, classes)),
                       results_dir / name / "compact-synthetic.parquet")
    dataset = str(tables.networks["dataset"].iloc[0])
    (results_dir / "dataset.json").write_text(json.dumps({"name": dataset, "classes": classes}))
    (results_dir / "recipes").mkdir(parents=True, exist_ok=True)
    for recipe_hash, recipe_json in tables.networks[["recipe_hash", "recipe_json"]].drop_duplicates().itertuples(index=False):
        (results_dir / "recipes" / f"{recipe_hash}.json").write_text(recipe_json)
    return results_dir
