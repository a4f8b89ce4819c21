"""Trained weights: each run's state dict as safetensors (never pickle) under RESULTS/weights/, and back.

``write_weights(results_dir, key, states, dtype)`` writes one file per saved epoch,
``DIR/weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors`` (``netzoo.results.weights_file``), each
atomically, before the key's networks part, and returns the networks row's weights columns; the row records each
file's sha256, so a key is whole only while its weights are (``netzoo.results.scan``), and
``netzoo.results.load_network`` builds a run's network with them. A file holds plain tensors and a header of
one string, ``{"netzoo": JSON of network, recipe_hash, seed, epoch, dtype}``: ``safetensors.torch.load_file`` reads it anywhere, without
netzoo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from netzoo import files
from netzoo import results as res

SAVE_WEIGHTS = ("last", "every", "none")   # --save-weights: the last epoch's state, every epoch's, or none
WEIGHTS_DTYPES = ("float32", "float16")    # --weights-dtype: of the floating-point tensors (others stay as they are)
NO_WEIGHTS = {"weights_file": None, "weights_bytes": None, "weights_dtype": None, "weights_epochs": [],
              "weights_sha256": []}       # the networks row's weights columns of a run saved without weights


def serialise(state: dict, dtype: str = "float32", metadata: dict | None = None) -> bytes:
    """A state dict as safetensors bytes: tensors detached, on the CPU, contiguous, floating-point ones cast to
    ``dtype`` (float32 or float16); ``metadata`` goes in the header as one string, ``{"netzoo": "<sorted JSON>"}``
    (safetensors writes header keys in no fixed order: one key keeps the same weights the same bytes)."""
    import torch
    from safetensors.torch import save

    if dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights dtype {dtype!r}; allowed: {', '.join(WEIGHTS_DTYPES)}")
    cast = getattr(torch, dtype)
    tensors = {name: (t.detach().to("cpu", cast) if t.is_floating_point() else t.detach().cpu()).contiguous().clone()
               for name, t in state.items()}
    return save(tensors, metadata={"netzoo": json.dumps(metadata or {}, sort_keys=True)})


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
                                                "epoch": epoch, "dtype": dtype})
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
