"""Trained weights: each run's state dict as safetensors (never pickle) under RESULTS/weights/, and back.

``write_weights(results_dir, key, states, dtype)`` writes one file per saved epoch,
``DIR/weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors`` (``netzoo.results.weights_file``), each
atomically, before the key's networks part, and returns the networks row's weights columns; the row records each
file's sha256, so a key is whole only while its weights are (``netzoo.results.scan``). ``load_network`` builds a
run's network from the zoo its job record names (``netzoo.zoo``'s front door checks the file's sha256) with its
trained weights, in eval mode. A file holds plain tensors and a header of strings (network, recipe_hash, seed,
epoch, dtype): ``safetensors.torch.load_file`` reads it anywhere, without netzoo.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from netzoo import files
from netzoo import results as res
from netzoo.errors import ResultsError

SAVE_WEIGHTS = ("last", "every", "none")   # --save-weights: the last epoch's state, every epoch's, or none
WEIGHTS_DTYPES = ("float32", "float16")    # --weights-dtype: of the floating-point tensors (others stay as they are)
NO_WEIGHTS = {"weights_file": None, "weights_bytes": None, "weights_dtype": None, "weights_epochs": [],
              "weights_sha256": []}       # the networks row's weights columns of a run saved without weights


def serialise(state: dict, dtype: str = "float32", metadata: dict | None = None) -> bytes:
    """A state dict as safetensors bytes: tensors detached, on the CPU, contiguous, floating-point ones cast to
    ``dtype`` (float32 or float16); ``metadata``: strings for the header."""
    import torch
    from safetensors.torch import save

    if dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights dtype {dtype!r}; allowed: {', '.join(WEIGHTS_DTYPES)}")
    cast = getattr(torch, dtype)
    tensors = {name: (t.detach().to("cpu", cast) if t.is_floating_point() else t.detach().cpu()).contiguous().clone()
               for name, t in state.items()}
    return save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})


def write_weights(results_dir, key: res.Key, states: dict, dtype: str = "float32") -> dict:
    """Write ``states`` (epoch -> state dict) of run ``key`` as one safetensors file per epoch, each atomically,
    and remove the key's other weights files (a run trained again); return the networks row's weights columns
    (weights_file and weights_bytes of the last epoch, weights_dtype, weights_epochs, weights_sha256).

    Like any part but the networks one, this first removes the key's networks part (which described the files
    being replaced): write the weights before the networks part. No states: ``NO_WEIGHTS``."""
    results_dir = Path(results_dir)
    (results_dir / "networks" / res.part_name(key)).unlink(missing_ok=True)
    folder = results_dir / res.weights_file(key, 0).rsplit("/", 1)[0]
    written, digests = [], []
    network, recipe_hash, seed = key
    for epoch in sorted(states):
        data = serialise(states[epoch], dtype, {"network": network, "recipe_hash": recipe_hash, "seed": seed,
                                                "epoch": epoch, "dtype": dtype, "written_by": "netzoo"})
        path = files.atomic_write(results_dir / res.weights_file(key, epoch), lambda f, d=data: f.write(d))
        written.append(path)
        digests.append(hashlib.sha256(data).hexdigest())
    if folder.is_dir():
        for stale in set(folder.iterdir()) - set(written):  # another run's epochs, or a leftover temporary file
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if not written:
            os.rmdir(folder)
    if not written:
        return dict(NO_WEIGHTS)
    last = max(states)
    return {"weights_file": res.weights_file(key, last), "weights_bytes": written[-1].stat().st_size,
            "weights_dtype": dtype, "weights_epochs": sorted(int(e) for e in states), "weights_sha256": digests}


def read_weights(path) -> dict:
    """The tensors of a weights file (safetensors.torch.load_file: no code runs, unlike a pickle)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def load_network(results_dir, network: str, seed: int | None = None, recipe: str | None = None,
                 epoch: int | str = "last"):
    """The trained network of one run: the generated class from the zoo its job record (DIR/jobs/) names,
    built, with the weights saved after ``epoch`` ("last": its last saved epoch), in eval mode.

    ``seed`` and ``recipe`` (a name or hash) choose the run when the network has several. Raises ResultsError,
    one line naming the problem and the fix, for a network, seed or recipe not in the results, an ambiguous
    choice, or an epoch whose weights were not saved; ZooError when the zoo's file is missing or changed."""
    from netzoo.zoo import import_network

    results_dir = res.results_folder(results_dir)
    row = _run_row(results_dir, network, seed, recipe)
    key = (row["network"], row["recipe_hash"], int(row["seed"]))
    saved = list(row["weights_epochs"] if row["weights_epochs"] is not None else [])
    if not saved:
        raise ResultsError(f"{network} seed {key[2]} recipe {row['recipe']} was trained without saving its weights "
                           f"(--save-weights none): train it again with --save-weights last into a new --results.")
    chosen = max(saved) if epoch == "last" else epoch
    if chosen not in saved:
        raise ResultsError(f"{network} seed {key[2]}: no weights saved for epoch {epoch!r}; saved epochs: "
                           f"{', '.join(map(str, saved))} (pass one of them, or 'last'; --save-weights every saves "
                           f"every epoch).")
    record = res.read_record(results_dir / "jobs" / f"{key[1]}.json") or {}
    if not record.get("zoo"):
        raise ResultsError(f"{results_dir / 'jobs' / f'{key[1]}.json'} is missing: the zoo that trained {network} is "
                           f"unknown. Rerun the netzoo train command that wrote {results_dir}.")
    model = import_network(Path(record["zoo"]) / row["file"], network, sha256=row["file_sha256"])()
    model.load_state_dict(read_weights(results_dir / res.weights_file(key, chosen)))
    return model.eval()


def _run_row(results_dir: Path, network: str, seed: int | None, recipe: str | None) -> dict:
    """The networks row of the one whole run of ``network`` (with ``seed``, under ``recipe``), or ResultsError."""
    columns = ["network", "recipe", "recipe_hash", "seed", "file", "file_sha256", "weights_epochs"]
    networks = res.load(results_dir, tables="networks", columns={"networks": columns}).networks
    runs = networks[networks["network"] == network]
    if runs.empty:
        known = sorted(networks["network"].unique())
        raise ResultsError(f"No trained {network!r} in {results_dir} (networks here: {', '.join(known[:5])}"
                           f"{' …' if len(known) > 5 else ''}); netzoo status --results {results_dir} lists them.")
    if recipe is not None:
        runs = runs[(runs["recipe"] == recipe) | (runs["recipe_hash"] == recipe)]
        if runs.empty:
            raise ResultsError(f"{network} was not trained under recipe {recipe!r} in {results_dir}; its recipes: "
                               f"{', '.join(sorted(set(networks.loc[networks['network'] == network, 'recipe'])))}.")
    if seed is not None:
        runs = runs[runs["seed"] == int(seed)]
        if runs.empty:
            raise ResultsError(f"{network} has no run with seed {seed} in {results_dir}; its seeds: "
                               f"{', '.join(map(str, sorted(networks.loc[networks['network'] == network, 'seed'])))}.")
    recipes = sorted(set(runs["recipe"]))
    if len(recipes) > 1:
        raise ResultsError(f"{network} was trained under several recipes ({', '.join(recipes)}): pass recipe=… "
                           f"(a name or hash).")
    if len(runs) > 1:
        raise ResultsError(f"{network} was trained with several seeds ({', '.join(map(str, sorted(runs['seed'])))}): "
                           f"pass seed=….")
    return runs.iloc[0].to_dict()
