"""Command line: execute the book's notebooks with papermill under a profile, and build the book.

    lyabook run [--profile smoke|full] [--device auto|cpu|cuda] [--only NAME ...] [--out DIR]
                [--set NAME=VALUE ...] [--quiet]
    lyabook exec NOTEBOOK [--profile ...] [--device ...] [--out DIR] [--set NAME=VALUE ...]
    lyabook build [--executed DIR] [--out DIR]          (a source checkout only)
    lyabook --version

(``python -m lyabook`` is the same.) Notebooks and profiles come from a source checkout's
``notebooks/`` when lyabook runs from one (an editable install), else from the installed
package (``lyabook/notebooks`` in the wheel). Profiles are YAML parameter files, one per
notebook and profile: ``notebooks/profiles/<profile>/<notebook>.yaml``; they override the
notebook's ``parameters`` cell, ``--set`` overrides them, and ``profile`` and ``device`` are
always injected. Values are read with YAML 1.2 rules (``6e2`` is a number) and checked
against the notebook's own parameters cell.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("smoke", "full")
DEVICES = ("auto", "cpu", "cuda")
REPOSITORY = "https://github.com/lyabook/lyabook"


class CLIError(Exception):
    """A one-line user error (exit code 2)."""


# ---------------------------------------------------------------- where the notebooks are

def is_source_checkout(root: Path | None = None) -> bool:
    """True when lyabook runs from a source checkout (an editable install or PYTHONPATH),
    where the book's sources sit next to the package."""
    root = ROOT if root is None else root
    return (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir()


def notebooks_dir() -> Path:
    """The chapters and their profiles: a source checkout's ``notebooks/`` when present,
    else the copy installed with the package (``lyabook/notebooks``, package data)."""
    if is_source_checkout():
        return ROOT / "notebooks"
    from importlib.resources import files

    return Path(str(files("lyabook").joinpath("notebooks")))


NOTEBOOKS = notebooks_dir()


def notebook_names(root: Path | None = None) -> list[str]:
    root = NOTEBOOKS if root is None else Path(root)
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


# ---------------------------------------------------------------- values: YAML 1.2 scalars

def _yaml12_loader():
    """A safe loader that resolves plain scalars by the YAML 1.2 core schema: ``6e2`` and
    ``1e-3`` are floats (YAML 1.1, PyYAML's default, reads them as strings), ``010`` is 10,
    only true/false are booleans (not yes/no/on/off), and dates stay strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    drop = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp"}
    Loader.yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag not in drop]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                 list("-+0123456789"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def to_bool(loader, node):
        return loader.construct_scalar(node).lower() == "true"

    def to_int(loader, node):
        v = loader.construct_scalar(node)
        if v.startswith(("0o", "0x")):
            return int(v[2:], 8 if v[1] == "o" else 16)
        return int(v, 10)

    def to_float(loader, node):
        v = loader.construct_scalar(node).lower()
        return float(v.replace(".inf", "inf").replace(".nan", "nan"))

    Loader.add_constructor("tag:yaml.org,2002:bool", to_bool)
    Loader.add_constructor("tag:yaml.org,2002:int", to_int)
    Loader.add_constructor("tag:yaml.org,2002:float", to_float)
    return Loader


_LOADER = None


def parse_value(text: str):
    """One YAML 1.2 value: ``"6e2"`` -> 600.0, ``"-5"`` -> -5, ``"[1, 2]"`` -> [1, 2],
    ``"null"`` or ``""`` -> None, ``"abc"`` -> "abc"."""
    global _LOADER
    import yaml

    _LOADER = _LOADER or _yaml12_loader()
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(items) -> dict:
    """``["epochs=8", "sizes=[1, 2]"]`` -> {"epochs": 8, "sizes": [1, 2]} (values parsed as YAML 1.2)."""
    import yaml

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise CLIError(f"--set expects NAME=VALUE, got {item!r}")
        if name in ("profile", "device"):
            raise CLIError(f"--set {name}=... is not allowed; use --{name}")
        try:
            out[name] = parse_value(value)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0]
            raise CLIError(f"--set {item!r}: the value is not valid YAML ({first})") from None
    return out


# ---------------------------------------------------------------- profiles and parameters

def load_profile(name: str, profile: str, root: Path | None = None) -> dict:
    """The parameters that ``profile`` sets for notebook ``name`` (works from a source
    checkout and from an installed wheel): ``load_profile("03_training_evolution", "full")``."""
    import yaml

    root = NOTEBOOKS if root is None else Path(root)
    if profile not in PROFILES:
        raise CLIError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    path = root / "profiles" / profile / f"{name}.yaml"
    if not path.is_file():
        raise CLIError(f"profile file {path} is missing for notebook {name!r}")
    try:
        params = yaml.load(path.read_text(), Loader=_yaml12_loader()) or {}  # noqa: S506
    except yaml.YAMLError as e:
        raise CLIError(f"profile file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise CLIError(f"profile file {path} must hold a mapping of parameter names to values")
    return params


_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def declared_parameters(path: Path) -> dict[str, type | None]:
    """The notebook's ``parameters`` cell, inspected by papermill: name -> the type its
    default has (bool, int, float, str, list, dict), or None where any value fits (a None
    default, an expression, an unknown type). An annotation (``x: int = ...``) wins.

    papermill skips a line with more than one ``=`` (``n = 4  # t = 40`` in a comment);
    those assignments are read from the cell's syntax tree instead."""
    import json
    import logging

    try:
        import papermill as pm
    except ImportError:  # `exec` on a headless machine without papermill: the syntax tree alone
        pm = None
    specs = {}
    if pm is not None:
        log = logging.getLogger("papermill")
        level = log.level
        log.setLevel(logging.ERROR)  # its "Unable to parse line" warnings: handled below
        try:
            specs = pm.inspect_notebook(str(path))
        except ValueError:  # no kernelspec: papermill cannot pick a translator; the syntax tree can
            specs = {}
        finally:
            log.setLevel(level)
    defaults = {name: (spec.get("inferred_type_name", "None"), spec["default"]) for name, spec in specs.items()}
    cells = json.loads(Path(path).read_text()).get("cells", [])
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    try:
        tree = ast.parse("".join(cell["source"])) if cell is not None else None
    except SyntaxError:
        tree = None
    for node in tree.body if tree is not None else []:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id not in defaults and node.value is not None:
                ann = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else "None"
                defaults[t.id] = (ann, ast.unparse(node.value))

    declared = {}
    for name, (annotation, source) in defaults.items():
        kind = _TYPES.get(annotation)
        if kind is None:
            try:
                default = ast.literal_eval(source)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                default = None
            kind = list if isinstance(default, tuple) else next((t for t in _TYPES.values() if type(default) is t), None)
        declared[name] = kind
    return declared


def _type_name(kind) -> str:
    return {float: "float (or int)", bool: "bool (true or false)"}.get(kind, kind.__name__)


def check_value(name: str, value, kind):
    """``value`` converted to fit ``kind`` (an integral float such as 6e2 for an int
    parameter becomes 600), or ValueError saying what was expected."""
    if kind is None:
        return value
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            return int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"{name} expects {_type_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def notebook_parameters(name: str, profile: str, device: str, overrides: dict | None = None,
                        root: Path | None = None) -> dict:
    """Profile file, then ``--set`` overrides, then profile and device (always injected),
    each checked against the notebook's parameters cell: an unknown name or a value of the
    wrong type is a CLIError. An override the notebook does not declare is left out when
    another notebook of the run declares it (see `run`); here it is an error."""
    root = NOTEBOOKS if root is None else Path(root)
    prof = load_profile(name, profile, root)
    declared = declared_parameters(root / f"{name}.ipynb")
    valid = ", ".join(declared) or "(none)"
    params = {}
    for source, values in ((f"profile file profiles/{profile}/{name}.yaml", prof), ("--set", overrides or {})):
        for key, value in values.items():
            where = f"--set {key}={value!r}" if source == "--set" else source
            if key not in declared:
                raise CLIError(f"{where}: notebook {name} has no parameter {key!r}; its parameters: {valid}")
            try:
                params[key] = check_value(key, value, declared[key])
            except ValueError as e:
                raise CLIError(f"{where}: {e} (notebook {name})") from None
    return {**params, "profile": profile, "device": device}


def check_device(device: str) -> str:
    """The device a notebook asked for ``device`` will use (auto -> cuda or cpu); 'cuda'
    without CUDA is an error. The notebook receives ``device`` itself, not this name."""
    if device not in DEVICES:
        raise CLIError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    from .results import resolve_device  # the notebooks' own resolution: one rule for both

    try:
        return resolve_device(device).type
    except ValueError as e:
        raise CLIError(str(e)) from None




def prepare_out(out) -> Path:
    """``out`` created if needed; a file, or a place that cannot be written, is a CLIError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out {out} cannot be created: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out} is not writable")
    return out


# ---------------------------------------------------------------- the rendered notebook

def code_ref() -> str:
    """The code a notebook is rendered from: the checkout's git commit, else the commit
    recorded in the installed version (``...+g<sha>``), else the tag ``v<version>``."""
    from . import __version__

    if is_source_checkout():
        try:
            res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
            if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", res.stdout.strip()):
                return res.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    m = re.search(r"\+g([0-9a-f]{7,40})", __version__)
    return m.group(1) if m else f"v{__version__}"


def colab_cell_source(ref: str) -> str:
    """The first code cell of every notebook: on Colab, install lyabook at ``ref`` (the
    commit or tag the notebook was rendered from) and nothing else Colab already has, then
    say whether the runtime must restart (`colab_report`); elsewhere, nothing."""
    return f'''\
# On Colab: install lyabook at the commit this page was rendered from (elsewhere: nothing).
import sys
if "google.colab" in sys.modules:
    import subprocess, importlib.metadata as md
    before = {{d.metadata["Name"]: d.version for d in md.distributions()}}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lyabook @ git+{REPOSITORY}@{ref}"], check=True)
    from lyabook.cli import colab_report
    colab_report(before)  # says whether the runtime must restart'''


def colab_report(before: dict) -> list:
    """After the Colab cell's install: print which distributions whose modules the kernel had
    already imported were changed by pip (the runtime must restart to use them) or, if none,
    the installed lyabook version. ``before``: {distribution name: version} before the install.
    Returns the changed distribution names."""
    import importlib
    import importlib.metadata as md

    importlib.invalidate_caches()
    top = {m.partition(".")[0] for m in list(sys.modules)}
    imported = {d for m, ds in md.packages_distributions().items() if m in top for d in ds}
    changed = sorted(d for d in imported if d in before and before[d] != md.version(d))
    if changed:
        print("Restart the runtime (Runtime > Restart session) and run this notebook again: "
              "pip upgraded " + ", ".join(changed))
    else:
        print(f"lyabook {md.version('lyabook')} installed")
    return changed


def _tags(cell) -> list:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def is_colab_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and "google.colab" in "".join(cell.get("source", ""))


def finish_notebook(path: Path, ref: str) -> None:
    """After papermill: the Colab cell (the first code cell, if it mentions google.colab)
    rewritten for ``ref``, visible in the book and skipped by nbval; the parameters and
    injected-parameters cells tagged ``hide-cell`` (folded in the book, a click opens them)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and is_colab_cell(code[0]):
        code[0].source = colab_cell_source(ref)
        tags = _tags(code[0])
        tags[:] = [t for t in tags if t not in ("remove-cell", "remove-input", "hide-cell")]
        if "nbval-skip" not in tags:
            tags.append("nbval-skip")
    for cell in nb.cells:
        tags = _tags(cell)
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-cell" not in tags:
            tags.append("hide-cell")
    nbformat.write(nb, str(path))


# ---------------------------------------------------------------- commands

class _DropUnknownParameterWarnings:
    """papermill warns "Passed unknown parameter" for any name its line parser missed; run
    has checked every name against the parameters cell already."""

    def filter(self, record):
        return not record.getMessage().startswith("Passed unknown parameter")


def _quiet_papermill_parameter_warnings():
    import logging

    log = logging.getLogger("papermill")
    if not any(isinstance(f, _DropUnknownParameterWarnings) for f in log.filters):
        log.addFilter(_DropUnknownParameterWarnings())


def run(profile: str = "smoke", device: str = "auto", only=None, out: Path | str = "out/notebooks",
        root: Path | None = None, overrides: dict | None = None, quiet: bool = False) -> int:
    """Execute notebooks; print a summary table; return 0, or 1 naming the failed notebook and cell.

    Each notebook's printed output is echoed to the terminal as it runs (unless ``quiet``);
    progress bars that notebooks draw with `lyabook.progress.bar` show there too. An override
    applies to the selected notebooks that declare it; one that none declares is an error.
    """
    import papermill as pm

    root = NOTEBOOKS if root is None else Path(root)
    if profile not in PROFILES:
        raise CLIError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    resolved = check_device(device)
    available = notebook_names(root)
    if not available:
        raise CLIError(f"no notebooks found in {root}")
    names = select(only, available)
    overrides = overrides or {}
    declared = {n: declared_parameters(root / f"{n}.ipynb") for n in names}
    for key, value in overrides.items():
        if not any(key in d for d in declared.values()):
            valid = sorted(set().union(*declared.values()) - {"profile", "device"})
            which = f"{names[0]} has no" if len(names) == 1 else "none of the selected notebooks has a"
            raise CLIError(f"--set {key}={value!r}: {which} parameter {key!r}; parameters: {', '.join(valid)}")
    params = {n: notebook_parameters(n, profile, device, {k: v for k, v in overrides.items() if k in declared[n]}, root)
              for n in names}
    out = prepare_out(out)
    ref = code_ref()
    _quiet_papermill_parameter_warnings()
    label = device if device == resolved else f"{device}:{resolved}"
    rows, failure = [], None
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} (profile {profile}, device {label}) ...", flush=True)
        src, dst = root / f"{name}.ipynb", out / f"{name}.ipynb"
        t0 = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params[name], kernel_name="python3",
                                cwd=str(out), progress_bar=False, log_output=False,
                                stdout_file=None if quiet else sys.stdout,
                                stderr_file=None if quiet else sys.stderr)
        except pm.PapermillExecutionError as e:
            status = "FAILED"
            failure = f"notebook {name} failed in cell {e.cell_index} (execution count {e.exec_count}): {e.ename}: {e.evalue}"
        except Exception as e:  # kernel died, notebook unreadable, ...
            status = "FAILED"
            failure = f"notebook {name} failed: {type(e).__name__}: {e}"
        if dst.is_file():
            try:
                finish_notebook(dst, ref)
            except Exception as e:  # never hide the run's own result behind this
                print(f"warning: could not finish {dst}: {type(e).__name__}: {e}", file=sys.stderr)
        rows.append((name, profile, label, status, time.perf_counter() - t0))
        if failure:
            break
    width = max(len("notebook"), *(len(r[0]) for r in rows))
    dwidth = max(len("device"), len(label))
    print(f"\n{'notebook':<{width}}  profile  {'device':<{dwidth}}  status  wall time")
    for name, prof, dev, status, wall in rows:
        print(f"{name:<{width}}  {prof:<7}  {dev:<{dwidth}}  {status:<6}  {wall:7.1f} s")
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

    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"notebook {path} does not exist")
    check_device(device)
    params = notebook_parameters(path.stem, profile, device, overrides, path.parent)
    nb = json.loads(path.read_text())
    out = prepare_out(out)
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
    """Build the book with ``-W -n --keep-going`` (from a source checkout only: the book's
    pages are not installed with the package).

    With ``executed``, the book's sources are staged in ``<out>/src`` with the executed
    notebooks from that folder in place of the committed ones (and their result files);
    without it, the committed notebooks are rendered as they are.
    """
    if not (is_source_checkout() and (ROOT / "_config.yml").is_file()):
        raise CLIError("build needs a source checkout of lyabook (the book's pages are not installed with the "
                       f"package): git clone {REPOSITORY} and run it there")
    out = prepare_out(out).resolve()
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
    from . import __version__

    p = argparse.ArgumentParser(prog="lyabook", description="Run the lyabook notebooks and build the book.")
    p.add_argument("--version", action="version", version=f"lyabook {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill under a profile")
    r.add_argument("--profile", default="smoke", choices=PROFILES,
                   help="smoke (small, CPU) or full (the dissertation's scale)")
    r.add_argument("--device", default="auto", choices=DEVICES,
                   help="passed to the notebooks as is; auto: cuda when available, else cpu")
    r.add_argument("--only", nargs="+", metavar="NAME", help="notebook names or unique prefixes")
    r.add_argument("--out", default="out/notebooks", help="folder for the executed notebooks and results")
    r.add_argument("--set", nargs="+", action="extend", metavar="NAME=VALUE", default=None,
                   help="override profile parameters (e.g. to run a reduced sweep; values are YAML, 6e2 is a "
                        "number); recorded in the notebook")
    r.add_argument("--quiet", action="store_true", help="do not echo the notebooks' printed output")
    x = sub.add_parser("exec", help="run one notebook's code without Jupyter (headless GPU machines)")
    x.add_argument("notebook")
    x.add_argument("--profile", default="smoke", choices=PROFILES)
    x.add_argument("--device", default="auto", choices=DEVICES)
    x.add_argument("--out", default="out/exec")
    x.add_argument("--set", nargs="+", action="extend", metavar="NAME=VALUE", default=None)
    w = sub.add_parser("sweep", help="train a named population sweep, or one shard of it (lyabook.sweeps)")
    w.add_argument("name", help="smnist, smnist-permuted, charrnn, force, asrnn or evolution (lyabook.sweeps)")
    w.add_argument("--shard", default="0/1", help="i/n: run shard i of n (default 0/1, the whole sweep); i/n:j/m: part j "
                   "of m of shard i (a shard too long for one GPU session, trained in parts that merge)")
    w.add_argument("--out", default="out/sweeps", help="folder for the records")
    w.add_argument("--profile", default="full", choices=(*PROFILES, "reduced"),
                   help="full, smoke, or reduced (smnist and charrnn only: a CPU-sized run)")
    w.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i>")
    w.add_argument("--data-dir", default=None, help="data folder (default: $LYABOOK_DATA_DIR or ~/.cache/lyabook)")
    w.add_argument("--quiet", action="store_true", help="no progress bars")
    w.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (default: the profile's)")
    w.add_argument("--jobs", default=None, help="comma-separated job names to run (default: every job of the sweep)")
    la = sub.add_parser("launch", help="run a sweep as one shard per visible GPU")
    la.add_argument("name")
    la.add_argument("--out", default="out/sweeps")
    la.add_argument("--profile", default="full", choices=PROFILES)
    la.add_argument("--gpus", type=int, default=None, help="number of shards (default: every visible GPU)")
    la.add_argument("--data-dir", default=None)
    la.add_argument("--epochs", type=int, default=None)
    la.add_argument("--jobs", default=None, help="comma-separated job names to run (default: every job of the sweep)")
    b = sub.add_parser("build", help="build the book (warnings are errors; a source checkout only)")
    b.add_argument("--executed", default=None, help="folder of executed notebooks to build from")
    b.add_argument("--out", default="out/book", help="output folder")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else 2
    try:
        if args.command == "run":
            return run(args.profile, args.device, args.only, args.out, overrides=parse_overrides(args.set),
                       quiet=args.quiet)
        if args.command == "exec":
            return exec_notebook(args.notebook, args.profile, args.device, args.out, parse_overrides(args.set))
        if args.command in ("sweep", "launch"):
            from . import sweeps

            only = None if args.jobs is None else [j.strip() for j in args.jobs.split(",")]

            if args.command == "launch":
                return sweeps.launch(args.name, args.out, args.profile, args.gpus, args.data_dir, args.epochs,
                                     only=only)
            done = sweeps.run_shard(args.name, args.out, sweeps.parse_shard(args.shard), args.profile, args.device,
                                    args.data_dir, progress=not args.quiet, epochs=args.epochs, only=only)
            for job, recs in done.items():
                what = f"epochs 0-{len(recs) - 1}" if recs and "epoch" in recs[0] else "results"
                print(f"{job}: {what} recorded under {args.out}")
            return 0
        return build(args.executed, args.out)
    except (ValueError, RuntimeError, FileNotFoundError) as e:  # bad input, a stale run, missing data: one line
        if args.command not in ("sweep", "launch"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
