"""Provenance of a run and result files that carry it.

Every notebook ends with `provenance(...)` (profile, device, versions, date, wall time) and
saves its numbers with `save_results`, a JSON file whose ``provenance`` entry says how
they were made.
"""
from __future__ import annotations

import json
import math
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

__all__ = ["provenance", "save_results", "load_results", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' / 'cuda' as given (error if absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def provenance(profile: str, device, wall_time_s: float | None = None) -> dict:
    """Dictionary describing how a result was made."""
    from . import __version__

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    info = {
        "profile": profile,
        "device": str(dev),
        "device_name": name,
        "lyabook": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if wall_time_s is not None:
        info["wall_time_s"] = round(float(wall_time_s), 1)
    return info


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def save_results(path, results: dict, prov: dict) -> Path:
    """Write ``{"provenance": prov, "results": results}`` as JSON (tensors and arrays become
    lists; non-finite floats become strings). Written atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"provenance": prov, "results": _jsonable(results)}, indent=1))
    tmp.replace(path)
    return path


def load_results(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist: run the notebook that writes it first")
    return json.loads(path.read_text())
