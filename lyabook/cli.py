"""Command line: execute the book's notebooks with papermill under a profile, and build the book.

    python -m lyabook run [--profile smoke|full] [--device auto|cpu|cuda] [--only NAME ...] [--out DIR]
    python -m lyabook build [--executed DIR] [--out DIR]

Profiles are YAML parameter files, one per notebook and profile:
``notebooks/profiles/<profile>/<notebook>.yaml``; they override the notebook's
``parameters`` cell. ``profile`` and ``device`` are always injected as well.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ("smoke", "full")


class CLIError(Exception):
    """A one-line user error (exit code 2)."""


def notebook_names(root: Path = NOTEBOOKS) -> list[str]:
    return sorted(p.stem for p in root.glob("*.ipynb"))


def select(only: list[str] | None, available: list[str]) -> list[str]:
    """Notebook names from exact names or unique prefixes ("01" -> "01_lorenz")."""
    if not only:
        return available
    chosen = []
    for name in only:
        name = Path(name).stem
        hits = [n for n in available if n == name] or [n for n in available if n.startswith(name)]
        if len(hits) != 1:
            what = "matches several notebooks" if hits else "is not a notebook"
            raise CLIError(f"--only {name!r} {what}; available: {', '.join(available)}")
        chosen.append(hits[0])
    return chosen


def load_profile(name: str, profile: str, root: Path = NOTEBOOKS) -> dict:
    import yaml

    if profile not in PROFILES:
        raise CLIError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    path = root / "profiles" / profile / f"{name}.yaml"
    if not path.is_file():
        raise CLIError(f"profile file {path} is missing for notebook {name!r}")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise CLIError(f"profile file {path} must hold a mapping of parameter names to values")
    return params


def notebook_parameters(name: str, profile: str, device: str, overrides: dict | None = None,
                        root: Path = NOTEBOOKS) -> dict:
    """Profile file, then ``--set`` overrides, then profile and device (always injected)."""
    return {**load_profile(name, profile, root), **(overrides or {}), "profile": profile, "device": device}


def resolve_device_name(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise CLIError(f"unknown device {device!r}; choose one of: auto, cpu, cuda")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("device 'cuda' requested but torch sees no CUDA device")
    return device


def parse_overrides(items) -> dict:
    """``["epochs=8", "sizes=[1, 2]"]`` -> {"epochs": 8, "sizes": [1, 2]} (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise CLIError(f"--set expects NAME=VALUE, got {item!r}")
        out[name] = yaml.safe_load(value)
    return out


def run(profile: str = "smoke", device: str = "auto", only=None, out: Path | str = "out/notebooks",
        root: Path = NOTEBOOKS, overrides: dict | None = None) -> int:
    """Execute notebooks; print a summary table; return 0, or 1 naming the failed notebook and cell."""
    import papermill as pm
    from tqdm.auto import tqdm

    device = resolve_device_name(device)
    names = select(only, notebook_names(root))
    params = {n: notebook_parameters(n, profile, device, overrides, root) for n in names}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failure = [], None
    bar = tqdm(names, desc=f"notebooks ({profile}, {device})", unit="nb")
    for name in bar:
        bar.set_postfix_str(name)
        src, dst = root / f"{name}.ipynb", out / f"{name}.ipynb"
        t0 = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params[name], kernel_name="python3",
                                cwd=str(out), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            status = "FAILED"
            failure = f"notebook {name} failed in cell {e.cell_index} (execution count {e.exec_count}): {e.ename}: {e.evalue}"
        except Exception as e:  # kernel died, notebook unreadable, ...
            status = "FAILED"
            failure = f"notebook {name} failed: {type(e).__name__}: {e}"
        rows.append((name, profile, device, status, time.perf_counter() - t0))
        if failure:
            break
    bar.close()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'notebook':<{width}}  profile  device  status  wall time")
    for name, prof, dev, status, wall in rows:
        print(f"{name:<{width}}  {prof:<7}  {dev:<6}  {status:<6}  {wall:7.1f} s")
    print(f"executed notebooks in {out.resolve()}")
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def exec_notebook(path, profile: str = "smoke", device: str = "auto", out: Path | str = "out/exec",
                  overrides: dict | None = None) -> int:
    """Run a notebook's code cells in one namespace without Jupyter (for headless machines
    without papermill): parameters from the profile and ``overrides``, working folder ``out``,
    figures discarded (Agg backend), the Colab cell skipped. Only the files the notebook
    writes (its results) remain; use `run` for an executed notebook with outputs."""
    import json
    import os

    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"notebook {path} does not exist")
    device = resolve_device_name(device)
    params = notebook_parameters(path.stem, profile, device, overrides, path.parent)
    nb = json.loads(path.read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ns = {"__name__": "__main__", "display": print}
    cwd = os.getcwd()
    os.chdir(out)
    try:
        for i, cell in enumerate(nb["cells"]):
            tags = cell.get("metadata", {}).get("tags", [])
            if cell["cell_type"] != "code" or "nbval-skip" in tags or "injected-parameters" in tags:
                continue
            src = "".join(cell["source"])
            if "parameters" in tags:
                src += "\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
            t0 = time.perf_counter()
            try:
                exec(compile(src, f"{path.name}[cell {i}]", "exec"), ns)
            except Exception as e:
                print(f"error: notebook {path.stem} failed in cell {i}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            print(f"cell {i}: {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        os.chdir(cwd)
    return 0


def build(executed: Path | str | None = None, out: Path | str = "out/book") -> int:
    """Build the book with ``-W -n --keep-going``.

    With ``executed``, the book's sources are staged in ``<out>/src`` with the executed
    notebooks from that folder in place of the committed ones (and their result files);
    without it, the committed notebooks are rendered as they are.
    """
    out = Path(out).resolve()
    if executed is None:
        src = ROOT
        build_dir = out
    else:
        executed = Path(executed)
        if not executed.is_dir():
            raise CLIError(f"--executed {executed} is not a folder of executed notebooks")
        src = out / "src"
        if src.exists():
            shutil.rmtree(src)
        src.mkdir(parents=True)
        for item in ("_config.yml", "_toc.yml", "references.bib", "book"):
            p = ROOT / item
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, src / item)
        shutil.copytree(ROOT / "notebooks", src / "notebooks",
                        ignore=shutil.ignore_patterns("*.ipynb", "results", "profiles"))
        for nb in executed.glob("*.ipynb"):
            shutil.copy2(nb, src / "notebooks" / nb.name)
        if (executed / "results").is_dir():
            shutil.copytree(executed / "results", src / "notebooks" / "results")
        build_dir = out
    # jupyter-book 1.x has no `python -m jupyter_book`; call its click entry point
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src),
           "--path-output", str(build_dir), "-W", "-n", "--keep-going"]
    res = subprocess.run(cmd)
    if res.returncode == 0:
        print(f"book built: {build_dir / '_build' / 'html' / 'index.html'}")
    else:
        print("error: the book build failed (warnings are errors); see the output above", file=sys.stderr)
    return res.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lyabook", description="Run the lyabook notebooks and build the book.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill under a profile")
    r.add_argument("--profile", default="smoke", help="smoke (small, CPU) or full (the dissertation's scale)")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--only", nargs="+", metavar="NAME", help="notebook names or unique prefixes")
    r.add_argument("--out", default="out/notebooks", help="folder for the executed notebooks and results")
    r.add_argument("--set", nargs="+", metavar="NAME=VALUE", default=None,
                   help="override profile parameters (e.g. to run a reduced sweep); recorded in the notebook")
    x = sub.add_parser("exec", help="run one notebook's code without Jupyter (headless GPU machines)")
    x.add_argument("notebook")
    x.add_argument("--profile", default="smoke")
    x.add_argument("--device", default="auto")
    x.add_argument("--out", default="out/exec")
    x.add_argument("--set", nargs="+", metavar="NAME=VALUE", default=None)
    b = sub.add_parser("build", help="build the book (warnings are errors)")
    b.add_argument("--executed", default=None, help="folder of executed notebooks to build from")
    b.add_argument("--out", default="out/book", help="output folder")
    args = p.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.profile, args.device, args.only, args.out, overrides=parse_overrides(args.set))
        if args.command == "exec":
            return exec_notebook(args.notebook, args.profile, args.device, args.out, parse_overrides(args.set))
        return build(args.executed, args.out)
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
