"""Result files: the one writer and reader of results, their provenance, and the manifest.

Every notebook and every training record is written by `save_results` and read by
`load_results`; `provenance` says which code, machine and settings made a result.

File layout
-----------
``name.json`` is one JSON object::

    {"provenance": {...}, "results": {...}, "arrays": {"file": "name.npz", "keys": [...], "sha256": "..."}}

``arrays`` is present only when `save_results` was given arrays: they are stored in
``name.npz`` beside the JSON (numpy's compressed archive, dtypes kept), and `load_results`
puts them back into ``results`` under their keys. The NPZ is written first and the JSON last,
each to a temporary file that is then renamed, so a JSON that exists names a complete record;
the JSON holds the NPZ's sha256, so an NPZ that does not belong to it (a run killed between the
two renames while overwriting an older record) is an error, not a silent mix.
Older training records (before this module) hold ``"arrays": "epoch_NNN.npz"`` inside
``results`` instead and no sha256; they load the same way.

Non-finite floats
-----------------
Strict JSON has no NaN or infinity. They are written as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (Python's ``str(float)`` spellings; ``float(s)`` reads them back), so every file is
standard JSON and ``null`` keeps meaning None. `load_results` turns these three strings back
into floats wherever they appear (also inside nested lists, so a list of lists comes back
numeric and ``np.asarray`` gives a float array); it also reads the non-standard ``NaN`` and
``Infinity`` literals. A string value spelled exactly like one of the three is therefore read
as a float: do not store such text in results. Files written before this module use the same
spellings and load unchanged.

Errors
------
Every problem reading a result (missing file, invalid or truncated JSON, a layout other than
the one above, a missing, damaged or mismatched NPZ) raises `ResultsError` (a ValueError) whose
message names the file; a missing file raises its subclass `MissingResultsError`, which is
also a FileNotFoundError.

Manifest
--------
``MANIFEST.json`` in a results folder lists every result file under it (recursively; not the
manifest itself, checkpoints ``state.pt``, temporary files or anything git ignores) with its
sha256, size in bytes and the notebook that writes it. `write_manifest` rewrites it,
`check_manifest` lists the differences. From a shell, after re-executing notebooks::

    python -m lyabook.results manifest notebooks/results   # rewrite
    python -m lyabook.results check notebooks/results      # exit status 1 on any difference
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

__all__ = ["ResultsError", "MissingResultsError", "provenance", "code_version", "records_provenance", "git_last_change",
           "resolve_device", "device_slug", "save_results",
           "load_results", "write_manifest", "check_manifest", "MANIFEST_NAME"]

MANIFEST_NAME = "MANIFEST.json"
# files never listed in a manifest: training checkpoints and temporary files (also git-ignored)
_NOT_RESULTS = ("state.pt", "*.tmp", "*.tmp.npz", ".DS_Store")
_NOT_RESULT_DIRS = ("__pycache__", ".ipynb_checkpoints")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class ResultsError(ValueError):
    """A result file is missing, unreadable or not laid out as `save_results` writes it; the
    message names the file."""


class MissingResultsError(ResultsError, FileNotFoundError):
    """The result file does not exist."""


# ------------------------------------------------------------------------ provenance
def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' / 'cuda' as given (error if absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def _source_sha256(package_dir: Path | None = None) -> str:
    """sha256 over the package's ``*.py`` files in sorted order (each file's name, then its
    bytes): the same for a git checkout and an installed wheel of the same sources."""
    h = hashlib.sha256()
    for f in sorted((package_dir or _package_dir()).glob("*.py")):
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _git(args, cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_last_change(path) -> str | None:
    """'<short commit> <date>' of the last commit that changed ``path`` (a file or a folder);
    None outside a git checkout or for a path git does not track."""
    path = Path(path).resolve()
    out = _git(["log", "-1", "--format=%h %cs", "--", str(path)], path if path.is_dir() else path.parent)
    return (out or "").strip() or None


def records_provenance(provs) -> dict:
    """One provenance for a run made of several records (a population's epochs), in `provenance`'s
    keys: for the device name, versions, commit, sources and host, the distinct values the records
    hold, joined by ", "; for the date, the first and the last. Keys no record holds are left out.
    Training records name their device under "device". A record merged from shards
    (`lyabook.train.merge_shards`) counts as the shards and parts it lists, each with its own
    device, code and date, since they may have run in different sessions from different commits."""
    provs = [{"device_name": p.get("device"), **p} for q in provs for p in _made_by_each(q)]
    out = {}
    for key in ("device_name", "torch", "lyabook", "git_commit", "source_sha256", "host"):
        vals = sorted({str(p[key]) for p in provs if p.get(key) is not None})
        if vals:
            out[key] = ", ".join(vals)
    dates = sorted(str(p["date"]) for p in provs if p.get("date"))
    if dates:
        out["date"] = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return out


def _made_by_each(prov: dict) -> list:
    """The provenances a record stands for: itself, or, merged from shards, each shard's and each
    part's entry (nested as ``{"shards": [..., {"parts": [...]}]}``). An entry records its device,
    code and date (`lyabook.train._made_by`); keys it does not record (the host, the lyabook
    version) are the merged record's own, i.e. its first shard's."""
    entries = prov.get("shards")
    if not isinstance(entries, list):
        return [prov]
    own = {k: v for k, v in prov.items() if k != "shards"}
    return [{**own, **leaf} for e in entries
            for leaf in (_made_by_each({"shards": e["parts"]}) if "parts" in e else [e])]


def code_version() -> dict:
    """Which code is running: the lyabook version, the sha256 of the package sources, and, in a
    git checkout of lyabook (not an installed wheel that happens to sit inside some other
    repository), the commit and whether the package's sources differ from it."""
    from . import __version__

    pkg = _package_dir()
    info = {"lyabook": __version__, "git_commit": None, "git_dirty": None, "source_sha256": _source_sha256(pkg)}
    out = _git(["rev-parse", "--show-toplevel", "HEAD"], pkg.parent)
    if out:
        lines = out.split()
        if len(lines) == 2 and Path(lines[0]).resolve() == pkg.parent:
            info["git_commit"] = lines[1]
            status = _git(["status", "--porcelain", "--", pkg.name], pkg.parent)
            info["git_dirty"] = None if status is None else bool(status.strip())
    return info


def device_slug(device) -> str:
    """The device as a result file names it: ``cpu``, or the GPU's name in lower case with
    underscores (``nvidia_h200``), so that a run on one card never overwrites another's."""
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev).lower().replace(" ", "_") if dev.type == "cuda" else "cpu"


def provenance(profile: str | None, device, wall_time_s: float | None = None, **extra) -> dict:
    """Dictionary describing how a result was made: profile, device and its name (the GPU's
    for CUDA), the code version (`code_version`: lyabook version, git commit and dirty flag,
    source sha256), library versions, command line, host, UTC date and wall time. Keyword
    arguments (e.g. ``reductions=``) are added as they are."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        n = torch.get_num_threads()
        name = f"CPU ({platform.machine()}, {n} thread{'s' if n != 1 else ''})"
    info = {
        "profile": profile,
        "device": str(dev),
        "device_name": name,
        **code_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "argv": list(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if wall_time_s is not None:
        info["wall_time_s"] = round(float(wall_time_s), 1)
    info.update(extra)
    return info


# ------------------------------------------------------------------------ encoding
def _jsonable(obj):
    """Tensors and arrays -> lists, numpy scalars -> Python scalars, non-finite floats ->
    "nan" / "inf" / "-inf" (see the module docstring)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _decode(obj):
    """Inverse of `_jsonable`'s float encoding: "nan" / "inf" / "-inf" -> float, recursively."""
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def _write_atomic(path: Path, write) -> None:
    """``write(file)`` into ``path.tmp``, flushed to disk, then renamed to ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_results(path, results: Mapping, prov: Mapping, arrays: Mapping | None = None) -> Path:
    """Write ``{"provenance": prov, "results": results}`` as JSON to ``path`` (tensors and
    arrays become lists, non-finite floats the strings "nan"/"inf"/"-inf"), and, when ``arrays``
    (a dict of name -> array or tensor) is given, those arrays with their dtypes to the NPZ beside
    it (``path`` with suffix ``.npz``); `load_results` puts them back into ``results``.
    Atomic: the NPZ and then the JSON are written to temporary files and renamed, the JSON last,
    so an existing JSON names a complete record. Returns the JSON's path."""
    path = Path(path)
    if not isinstance(results, Mapping) or not isinstance(prov, Mapping):
        raise TypeError(f"{path}: results and prov must be dicts, got {type(results).__name__} and {type(prov).__name__}")
    legacy = results.get("arrays")
    if isinstance(legacy, str) and legacy.endswith(".npz"):
        raise ValueError(f"{path}: results['arrays'] = {legacy!r} would be read as an NPZ of an old training record; "
                         "pass arrays with arrays=")
    doc = {"provenance": _jsonable(prov), "results": _jsonable(results)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if arrays:
        clash = sorted(set(map(str, arrays)) & set(doc["results"]))
        if clash:
            raise ValueError(f"{path}: {clash} are keys of both results and arrays")
        data = {str(k): (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in arrays.items()}
        for k, v in data.items():
            if v.dtype == object:
                raise TypeError(f"{path}: array {k!r} has dtype object; arrays must be numeric")
        buf = io.BytesIO()
        np.savez_compressed(buf, **data)
        blob = buf.getvalue()
        npz = path.with_suffix(".npz")
        _write_atomic(npz, lambda f: f.write(blob))
        doc["arrays"] = {"file": npz.name, "keys": list(data), "sha256": _sha256(blob)}
    text = json.dumps(doc, indent=1, allow_nan=False)
    _write_atomic(path, lambda f: f.write(text.encode()))
    return path


# ------------------------------------------------------------------------ reading
def _load_npz(npz: Path, json_path: Path, keys=None, sha256: str | None = None) -> dict:
    if not npz.is_file():
        raise ResultsError(f"{npz}: the arrays of {json_path} are missing")
    blob = npz.read_bytes()
    if sha256 is not None and _sha256(blob) != sha256:
        raise ResultsError(f"{npz}: does not match {json_path} (sha256 {_sha256(blob)[:12]}, the record names "
                           f"{sha256[:12]}): the record is incomplete or was mixed with another; rerun what writes it")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, zlib.error) as err:
        raise ResultsError(f"{npz}: damaged or incomplete arrays of {json_path} ({type(err).__name__}: {err})") from err


def load_results(path, *, arrays: bool = True) -> dict:
    """Read a result written by `save_results` (or an older training record): returns
    ``{"provenance": {...}, "results": {...}}`` with non-finite floats decoded and, unless
    ``arrays=False``, the NPZ's arrays (numpy) put back into ``results``. Raises `ResultsError`
    naming the file on any problem (`MissingResultsError` if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        raise MissingResultsError(f"results file {path} does not exist: run the notebook that writes it first")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ResultsError(f"{path}: not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg}); "
                           "the file is damaged or was cut short: rerun what writes it") from err
    expected = 'a JSON object {"provenance": {...}, "results": {...}} (written by lyabook save_results)'
    if not isinstance(doc, dict):
        raise ResultsError(f"{path}: expected {expected}, got a JSON {type(doc).__name__}")
    missing = sorted({"provenance", "results"} - set(doc))
    extra = sorted(set(doc) - {"provenance", "results", "arrays"})
    if missing or extra:
        raise ResultsError(f"{path}: expected {expected}; "
                           + "; ".join(([f"missing {missing}"] if missing else []) + ([f"unexpected keys {extra}"] if extra else [])))
    for key in ("provenance", "results"):
        if not isinstance(doc[key], dict):
            raise ResultsError(f"{path}: expected {expected}; {key!r} is a JSON {type(doc[key]).__name__}")
    res = _decode(doc["results"])
    out = {"provenance": _decode(doc["provenance"]), "results": res}
    meta = doc.get("arrays")
    if meta is not None:
        if not (isinstance(meta, dict) and isinstance(meta.get("file"), str) and isinstance(meta.get("keys"), list)
                and Path(meta["file"]).name == meta["file"]):
            raise ResultsError(f'{path}: "arrays" must be {{"file": "<name>.npz", "keys": [...], "sha256": ...}}, got {meta!r}')
        if arrays:
            loaded = _load_npz(path.parent / meta["file"], path, meta["keys"], meta.get("sha256"))
    elif isinstance(res.get("arrays"), str) and res["arrays"].endswith(".npz"):  # a training record from before
        name = res.pop("arrays")
        if Path(name).name != name:
            raise ResultsError(f"{path}: results['arrays'] must name a file beside it, got {name!r}")
        if arrays:
            loaded = _load_npz(path.parent / name, path)
    else:
        return out
    if arrays:
        clash = sorted(set(loaded) & set(res))
        if clash:
            raise ResultsError(f"{path}: {clash} are keys of both the results and their arrays")
        res.update(loaded)
    return out


# ------------------------------------------------------------------------ manifest
def _ignored_by_git(root: Path, rel: list[str]) -> set[str]:
    """The paths among ``rel`` (relative to ``root``) that git ignores; none outside a work tree."""
    if not rel:
        return set()
    try:
        res = subprocess.run(["git", "-C", str(root), "check-ignore", "--stdin", "-z"], input="\0".join(rel) + "\0",
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return set()
    if res.returncode not in (0, 1):  # 1: nothing ignored; 128: not a git work tree
        return set()
    return {p for p in res.stdout.split("\0") if p}


def _result_files(results_dir: Path) -> list[str]:
    files = []
    for f in results_dir.rglob("*"):
        rel = f.relative_to(results_dir)
        if not f.is_file() or rel.as_posix() == MANIFEST_NAME:
            continue
        if any(part in _NOT_RESULT_DIRS for part in rel.parts) or any(fnmatch.fnmatch(f.name, p) for p in _NOT_RESULTS):
            continue
        files.append(rel.as_posix())
    ignored = _ignored_by_git(results_dir, files)
    return sorted(f for f in files if f not in ignored)


def _writer(rel: str, notebooks: list[str]) -> str | None:
    """The notebook whose name the file's top-level entry starts with (01_lorenz.json and
    03_training_evolution_runs/... -> 01_lorenz.ipynb, 03_training_evolution.ipynb)."""
    top = rel.split("/")[0]
    hits = [n for n in notebooks if top == n or top.startswith(n + ".") or top.startswith(n + "_")]
    return f"{max(hits, key=len)}.ipynb" if hits else None


def _entries(results_dir: Path) -> dict:
    notebooks = sorted(p.stem for p in results_dir.parent.glob("*.ipynb"))
    out = {}
    for rel in _result_files(results_dir):
        data = (results_dir / rel).read_bytes()
        out[rel] = {"sha256": _sha256(data), "bytes": len(data), "written_by": _writer(rel, notebooks)}
    return out


def write_manifest(results_dir) -> Path:
    """(Re)write ``results_dir/MANIFEST.json``: every result file under ``results_dir`` with
    its sha256, size and writing notebook. Returns the manifest's path."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise MissingResultsError(f"results folder {results_dir} does not exist")
    doc = {"about": "sha256 and size of every result file in this folder; rewrite with "
                    "`python -m lyabook.results manifest <this folder>`, check with `... check`",
           "files": _entries(results_dir)}
    path = results_dir / MANIFEST_NAME
    text = json.dumps(doc, indent=1) + "\n"
    _write_atomic(path, lambda f: f.write(text.encode()))
    return path


def check_manifest(results_dir) -> list[str]:
    """Differences between ``results_dir`` and its MANIFEST.json, one line each (empty: they
    agree): files changed, missing, or not listed."""
    results_dir = Path(results_dir)
    path = results_dir / MANIFEST_NAME
    if not path.is_file():
        return [f"{path}: no manifest; write it with `python -m lyabook.results manifest {results_dir}`"]
    try:
        listed = json.loads(path.read_text())["files"]
        assert isinstance(listed, dict)
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        return [f"{path}: not a manifest ({type(err).__name__}: {err})"]
    problems = []
    present = set(_result_files(results_dir))
    for rel in sorted(set(listed) | present):
        if rel not in present:
            problems.append(f"{rel}: listed in {MANIFEST_NAME} but missing")
        elif rel not in listed:
            problems.append(f"{rel}: not listed in {MANIFEST_NAME}")
        else:
            data = (results_dir / rel).read_bytes()
            want = listed[rel]
            if _sha256(data) != want.get("sha256") or len(data) != want.get("bytes"):
                problems.append(f"{rel}: changed since {MANIFEST_NAME} was written "
                                f"({len(data)} bytes, sha256 {_sha256(data)[:12]}; listed: {want.get('bytes')} bytes, "
                                f"sha256 {str(want.get('sha256'))[:12]})")
    return problems


def main(argv=None) -> int:
    """``python -m lyabook.results manifest|check [DIR]`` (DIR: notebooks/results)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lyabook.results", description="manifest of result files")
    ap.add_argument("command", choices=["manifest", "check"], help="manifest: rewrite MANIFEST.json; check: compare")
    ap.add_argument("dir", nargs="?", default="notebooks/results", help="results folder (default: notebooks/results)")
    args = ap.parse_args(argv)
    try:
        if args.command == "manifest":
            path = write_manifest(args.dir)
            n = len(json.loads(path.read_text())["files"])
            print(f"wrote {path} ({n} files)")
            return 0
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = check_manifest(args.dir)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{Path(args.dir) / MANIFEST_NAME}: every result file matches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
