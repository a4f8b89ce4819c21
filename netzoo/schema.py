"""The one source of truth for every table netzoo writes: columns, dtypes and one line on what each holds.

Tables:
- ``manifest``    one row per network of a zoo (``zoo/<name>/manifest.parquet``), written by the generator.
- ``networks``    one row per trained (network, recipe_hash, seed): the manifest row plus the training figures.
- ``epochs``      one row per (network, recipe_hash, seed, epoch): losses, accuracies, times.
- ``predictions`` one row per (network, recipe_hash, seed, epoch, test sample): label, prediction, probabilities
                  (a diverged epoch keeps its rows, with null prediction and probabilities).
- ``layers``      one row per (network, recipe_hash, seed, epoch, layer): activation and gradient statistics.

Every results table is keyed by ``KEY = (network, recipe_hash, seed)``: sweeps and repeated seeds never collide.
Writers check frames against these schemas (``conform``); ``netzoo.results.load`` returns these dtypes;
``tests/test_schema.py`` keeps ``docs/results.md`` in step with this file.
"""

from __future__ import annotations

import pyarrow as pa

KEY = ("network", "recipe_hash", "seed")

# Values of the ``status`` column of ``networks`` and ``epochs``.
STATUSES = ("done", "diverged", "failed", "stopped_early")


def _schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    """A pyarrow schema whose fields carry their one-line description as metadata."""
    return pa.schema([pa.field(name, dtype, metadata={"doc": doc}) for name, dtype, doc in fields])


def describe(schema: pa.Schema) -> dict[str, str]:
    """Column name -> its one-line description, for docs and ``--help``."""
    return {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in schema}


# --- manifest: what the generator knows about each network, before any training -----------------
MANIFEST_FIELDS = [
    ("network", pa.string(), "network name, also its file and class name: Basic or {Family}{Activation}_{i}"),
    ("family", pa.string(), "Linear, Conv1d, Conv2d, Conv3d, Conv1dThenLinear, Conv2dThenLinear, Conv3dThenLinear, ResNetStyle or Basic"),
    ("activation", pa.string(), "None, ReLU, SELU, Sigmoid or Tanh (the cell's activation)"),
    ("depth", pa.int64(), "number of weight layers (Linear/Conv; a BasicBlock counts its two convs)"),
    ("arch_id", pa.string(), "stable hash of the canonical architecture: equal ids are the same network"),
    ("file", pa.string(), "the generated .py file, relative to the zoo folder"),
    ("file_sha256", pa.string(), "sha256 of the generated file's bytes: netzoo refuses to import a file that differs"),
    ("template", pa.string(), "the Jinja template it was rendered from, relative to templates/"),
    ("input_shape", pa.string(), "input shape as CxHxW, e.g. 1x28x28"),
    ("classes", pa.int64(), "number of output classes"),
    ("params", pa.int64(), "trainable parameters"),
    ("memory", pa.int64(), "elements of every distinct tensor at module boundaries in one forward pass of one input"),
    ("ops", pa.int64(), "distinct autograd nodes created by one forward pass of one input"),
    ("macs", pa.int64(), "multiply-accumulates of one forward pass of one input, from thop"),
    ("flops_forward", pa.int64(), "FLOPs of one forward pass of one input, from torch FlopCounterMode"),
    ("flops_train_step", pa.int64(), "FLOPs of forward + backward of one input, from torch FlopCounterMode"),
    ("layer_types", pa.list_(pa.string()), "the weight layers in order: Linear, Conv1d, Conv2d, Conv3d, BasicBlock"),
    ("widths", pa.list_(pa.int64()), "output features or channels of each weight layer, in order"),
    ("kernel_sizes", pa.list_(pa.int64()), "kernel side of each conv layer (0 for Linear layers), in order"),
    ("biases", pa.list_(pa.bool_()), "whether each weight layer has a bias, in order"),
    ("activations_after", pa.list_(pa.bool_()), "whether an activation follows each weight layer, in order"),
    ("dropout", pa.float64(), "dropout probability after each activation (0: no Dropout layer)"),
    ("batch_norm", pa.bool_(), "whether a BatchNorm layer follows each hidden weight layer"),
    ("hparams", pa.string(), "every sampled hyperparameter, as JSON"),
    ("spec", pa.string(), "the spec's name (default, square, …) or file path"),
    ("spec_hash", pa.string(), "sha256 of the spec file's bytes"),
    ("seed", pa.int64(), "the generation seed"),
]
MANIFEST = _schema(MANIFEST_FIELDS)

# --- networks: the manifest row (its generation ``seed`` renamed ``zoo_seed``) + training figures ----
NETWORKS = _schema(
    [("network", pa.string(), "network name (see manifest)")]
    + [(("zoo_seed" if n == "seed" else n), t, ("the zoo's generation seed" if n == "seed" else d))
       for n, t, d in MANIFEST_FIELDS if n != "network"]
    + [
        ("recipe", pa.string(), "the recipe's name"),
        ("recipe_hash", pa.string(), "sha256 (first 16 hex digits) of the resolved recipe, name excluded"),
        ("recipe_json", pa.string(), "the resolved recipe, as JSON"),
        ("seed", pa.int64(), "the training seed"),
        ("dataset", pa.string(), "dataset name: digits, mnist, fashion-mnist, kmnist"),
        ("status", pa.string(), "done, diverged, failed or stopped_early (the last epoch's status)"),
        ("error", pa.string(), "the exception message when failed, else null"),
        ("epochs_done", pa.int64(), "epochs recorded"),
        ("batch_size_used", pa.int64(), "batch size actually used (halved after a CUDA out-of-memory)"),
        ("last_batch_merged", pa.bool_(), "whether each epoch's final batch of one sample was merged into the batch "
                                          "before (networks with BatchNorm only: it cannot train on one sample)"),
        ("oom_retries", pa.int64(), "CUDA out-of-memory retries"),
        ("fused_runs", pa.int64(), "runs trained together as one fused group (netzoo.fuse), this one included; 1: "
                                   "alone. A group's times are shared: each run is charged its share"),
        ("train_time_s", pa.float64(), "seconds of training steps, all epochs (device synchronised; in a fused "
                                       "group, the group's time divided by the runs training each epoch)"),
        ("eval_time_s", pa.float64(), "seconds of test (and validation) evaluation, all epochs (a fused group's "
                                      "divided by its runs)"),
        ("wall_time_s", pa.float64(), "seconds from loading the network to writing its results (a fused group's "
                                      "divided by its runs)"),
        ("peak_memory_bytes", pa.int64(), "peak device memory while training (CUDA: max_memory_allocated; CPU: null)"),
        ("device", pa.string(), "device it trained on, e.g. cpu or cuda:0 (NVIDIA H100 80GB HBM3)"),
        ("threads", pa.int64(), "torch intra-op threads of the worker"),
        ("worker", pa.string(), "host:pid of the worker that trained it"),
        ("netzoo_version", pa.string(), "netzoo version"),
        ("git_commit", pa.string(), "git commit of the netzoo checkout, or null"),
        ("torch_version", pa.string(), "torch version"),
        ("finished_at", pa.timestamp("us", tz="UTC"), "when its results were written"),
        ("weights_file", pa.string(), "the state dict after the last epoch, as safetensors, relative to the results "
                                      "folder (weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors); null "
                                      "when not saved (--save-weights none)"),
        ("weights_bytes", pa.int64(), "size of weights_file in bytes; null when not saved; pandas 'Int64'"),
        ("weights_dtype", pa.string(), "float32 or float16: the dtype of the floating-point tensors in the weights "
                                       "files; null when not saved"),
        ("weights_epochs", pa.list_(pa.int64()), "the epochs whose state dict is saved, one file each (--save-weights "
                                                 "last: the last; every: all); empty or null when none is"),
        ("weights_sha256", pa.list_(pa.string()), "sha256 of each saved epoch's file, in weights_epochs order: the key "
                                                  "is whole only while these files are"),
    ]
)

KEY_FIELDS = [
    ("network", pa.string(), "network name"),
    ("recipe", pa.string(), "the recipe's name"),
    ("recipe_hash", pa.string(), "hash of the resolved recipe"),
    ("seed", pa.int64(), "the training seed"),
]

# --- epochs: per-class recall columns test_acc_class_0..K-1 depend on K (see epochs_schema) -------
_EPOCH_FIELDS = KEY_FIELDS + [
    ("epoch", pa.int64(), "epoch number, from 1"),
    ("status", pa.string(), "done, diverged (loss NaN/inf at this epoch: its accuracies are null) or stopped_early"),
    ("train_loss", pa.float64(), "mean NLL loss over the epoch's training steps (kept as measured when diverged)"),
    ("train_acc", pa.float64(), "accuracy on the training batches during the epoch, in [0, 1]; null when diverged"),
    ("test_loss", pa.float64(), "mean NLL loss on the test split after the epoch (kept as measured when diverged)"),
    ("test_acc", pa.float64(), "plain accuracy on the test split, in [0, 1]; null when diverged"),
    ("test_balanced_acc", pa.float64(), "mean of per-class recalls on the test split (the study's 'accuracy'), in "
                                        "[0, 1]; null when diverged"),
    ("val_loss", pa.float64(), "mean NLL loss on the validation split (held out of the training split: the "
                               "recipe's validation) after the epoch; null without one"),
    ("val_acc", pa.float64(), "plain accuracy on the validation split, in [0, 1]; null without one or when diverged"),
    ("val_balanced_acc", pa.float64(), "mean of per-class recalls on the validation split, in [0, 1]: what networks "
                                       "are picked and stopped early on; null without one or when diverged"),
    ("epoch_time_s", pa.float64(), "seconds of this epoch's training steps (device synchronised)"),
    ("train_time_s", pa.float64(), "cumulative seconds of training steps up to this epoch"),
    ("eval_time_s", pa.float64(), "seconds of this epoch's test (and validation) evaluation"),
    ("lr", pa.float64(), "learning rate at the end of the epoch"),
]


def class_columns(classes: int) -> list[str]:
    """Per-class recall column names: test_acc_class_0 … test_acc_class_{K-1}."""
    return [f"test_acc_class_{k}" for k in range(classes)]


def epochs_schema(classes: int) -> pa.Schema:
    """The epochs table for a K-class dataset."""
    extra = [(c, pa.float64(), f"recall of class {c.rsplit('_', 1)[1]} on the test split, in [0, 1]; null when "
                               "diverged")
             for c in class_columns(classes)]
    return _schema(_EPOCH_FIELDS + extra)


PREDICTIONS = _schema(KEY_FIELDS + [
    ("epoch", pa.int64(), "epoch number, from 1"),
    ("sample", pa.int64(), "index of the test sample in the dataset's test split"),
    ("label", pa.int64(), "true class"),
    ("pred", pa.int64(), "predicted class (argmax); null at a diverged epoch (NaN outputs predict nothing); "
                         "pandas 'Int64'"),
    ("probs", pa.list_(pa.float16()), "predicted probability of each class (K float16); null at a diverged epoch"),
])

LAYERS = _schema(KEY_FIELDS + [
    ("epoch", pa.int64(), "epoch number, from 1"),
    ("layer", pa.string(), "module path in the generated file, e.g. act1 or blocks.0.relu"),
    ("kind", pa.string(), "module class, e.g. ReLU, Linear, Conv2d"),
    ("width", pa.int64(), "neurons (features or channels) of the layer"),
    ("dead_fraction", pa.float64(), "share of neurons whose activation has zero variance over the test split, in [0, 1]"),
    ("activation_rate", pa.float64(), "share of outputs that are active (non-zero for ReLU-like; above the threshold otherwise), in [0, 1]"),
    ("var_mean", pa.float64(), "mean of per-neuron activation variances"),
    ("var_sum", pa.float64(), "sum of per-neuron activation variances"),
    ("var_q05", pa.float64(), "5% quantile of per-neuron activation variances"),
    ("var_q25", pa.float64(), "25% quantile of per-neuron activation variances"),
    ("var_q50", pa.float64(), "median of per-neuron activation variances"),
    ("var_q75", pa.float64(), "75% quantile of per-neuron activation variances"),
    ("var_q95", pa.float64(), "95% quantile of per-neuron activation variances"),
    ("variances", pa.list_(pa.float32()), "the per-neuron activation variances"),
    ("shapiro_w", pa.float64(), "Shapiro-Wilk statistic of the per-neuron variances"),
    ("shapiro_p", pa.float64(), "Shapiro-Wilk p-value of the per-neuron variances"),
    ("grad_norm_mean", pa.float64(), "mean over the epoch's steps of the layer's weight-gradient L2 norm"),
    ("grad_norm_max", pa.float64(), "max over the epoch's steps of the layer's weight-gradient L2 norm"),
    ("dead_grad_fraction", pa.float64(), "share of units whose weight gradients were zero on every step, in [0, 1]"),
])

# What one row of each table is: the dataset card and the Croissant metadata of an export (netzoo.export) say it.
TABLE_DOCS = {
    "manifest": "one row per network of a zoo, written by the generator: architecture, costs, generated file",
    "networks": "one row per trained run (network, recipe_hash, seed): the manifest row plus the training figures",
    "epochs": "one row per run and epoch: losses, accuracies (train, validation, test), times",
    "predictions": "one row per run, epoch and test sample: label, predicted class and each class's probability",
    "layers": "one row per run, epoch and layer: activation and gradient statistics",
}

# Columns added after results were first written, per table. A part written before holds none of them and reads
# them as null (``columns_match``; readers project onto the schema by name); a part written since holds them all.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "epochs": ("val_loss", "val_acc", "val_balanced_acc"),
    "networks": ("weights_file", "weights_bytes", "weights_dtype", "weights_epochs", "weights_sha256"),
}


def columns_match(got: pa.Schema, expected: pa.Schema, table: str) -> bool:
    """Whether a file's columns are ``expected``'s (name and type), in order, or those of a part written before
    ADDED_COLUMNS[table] existed: every other column, none of the added ones."""
    pairs = [(f.name, f.type) for f in got]
    if pairs == [(f.name, f.type) for f in expected]:
        return True
    added = ADDED_COLUMNS.get(table, ())
    return bool(added) and pairs == [(f.name, f.type) for f in expected if f.name not in added]


# Folder name under --results DIR -> schema (epochs needs the class count: see table_schema).
TABLES = ("networks", "epochs", "predictions", "layers")


def table_schema(table: str, classes: int) -> pa.Schema:
    """The schema of a results table for a K-class dataset."""
    if table == "epochs":
        return epochs_schema(classes)
    schemas = {"networks": NETWORKS, "predictions": PREDICTIONS, "layers": LAYERS, "manifest": MANIFEST}
    if table not in schemas:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(('manifest',) + TABLES)}")
    return schemas[table]


def conform(frame, schema: pa.Schema) -> pa.Table:
    """A pandas frame as a pyarrow Table with exactly ``schema``'s columns, order and dtypes.

    Raises ValueError naming the missing or unexpected columns: writers never store a drifting table.
    """
    missing = [n for n in schema.names if n not in frame.columns]
    extra = [c for c in frame.columns if c not in schema.names]
    if missing or extra:
        raise ValueError(f"frame does not match the schema: missing {missing}, unexpected {extra}")
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


# --- documentation -----------------------------------------------------------------------------------
def _type_name(dtype: pa.DataType) -> str:
    """'int64', 'string', 'list<float16>', 'timestamp[us, UTC]'."""
    if pa.types.is_list(dtype):
        return f"list<{_type_name(dtype.value_type)}>"
    return str(dtype).replace("tz=", "")


def schema_markdown() -> str:
    """The column tables of docs/results.md (and of an export's card), rendered from the schemas above, one
    Markdown table per table; the K per-class recall columns as one row (tests/test_schema.py checks the doc)."""
    sections = []
    for table in ("manifest",) + TABLES:
        schema = table_schema(table, 1)
        lines = [f"### `{table}`", "", "| column | type | meaning |", "| --- | --- | --- |"]
        for name, doc in describe(schema).items():
            if name.startswith("test_acc_class_"):
                name, doc = "test_acc_class_0 … test_acc_class_{K-1}", doc.replace("of class 0", "of each class")
            lines.append(f"| `{name}` | {_type_name(schema.field(name.split(' ')[0]).type)} | {doc} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
