"""Devices: which ones a run may use (``--device``), what to call them, and how to wait for them.

torch is imported inside each function: reading ``--device`` or a device's name must not cost torch's import
in a process that trains nothing.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from netzoo.errors import NetzooError


def parse_devices(text) -> tuple[str, ...]:
    """'cpu', 'cuda' (every visible GPU) or 'cuda:0,cuda:1'; None = cuda if present, else cpu; a tuple or list
    of device names is taken as it is. Raises NetzooError for another name, or for cuda without a GPU."""
    import torch

    if isinstance(text, (tuple, list)):
        return tuple(text)
    if text is None:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    if devices == ["cuda"] and torch.cuda.is_available():  # with no GPU, "cuda" is refused just below
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for d in devices:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
            raise NetzooError(f"--device {text!r}: allowed cpu, cuda, or cuda:0,cuda:1,…")
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise NetzooError(f"--device {text}: no CUDA GPU is visible here; use --device cpu.")
    return tuple(devices) or ("cpu",)


def device_name(device, detail: bool = False) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)': the networks table's ``device`` column. With ``detail``, a CPU
    also says its cores and model: 'cpu (2 cores, Intel(R) Xeon(R) Processor)' (what benchmarks record)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if not detail:
        return str(device)
    model = platform.processor() or platform.machine()
    try:
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return f"{device} ({os.cpu_count()} cores, {model})"


def sync(device) -> None:
    """Wait for the device's queued work, so the clock measures finished work (no-op on CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
