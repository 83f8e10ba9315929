"""The wheel, installed into a fresh virtual environment outside the repository, runs the CLI
(issue 9): the chapters and profiles ship as package data, the version comes from git through
setuptools-scm, and `lyabook run` executes a notebook with the smoke profile.

Slow (a fresh venv, torch installed first and pinned, then the wheel and its dependencies from
the package index): about a minute or two with packages on local disk. LYABOOK_SKIP_WHEEL_TEST=1
skips it; LYABOOK_TORCH overrides the pin (default torch==2.13.0, the Makefile's).
"""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = os.environ.get("LYABOOK_TORCH", "torch==2.13.0")

pytestmark = pytest.mark.skipif(os.environ.get("LYABOOK_SKIP_WHEEL_TEST") == "1",
                                reason="LYABOOK_SKIP_WHEEL_TEST=1")


def _sh(cmd, cwd, env=None, timeout=900):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _source_copy(dest: Path) -> Path:
    """The working tree as a fresh clone sees it: a local clone (so setuptools-scm reads the
    same history and tags) with uncommitted changes copied over. Building there keeps the
    setuptools build/ folder (and any stale files in it) out of the checkout."""
    if not (ROOT / ".git").exists():
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv", "out", "build", "*.egg-info", ".git"))
        return dest
    _sh(["git", "clone", "-q", "--local", "--no-checkout", ROOT, dest], cwd=ROOT.parent)
    _sh(["git", "checkout", "-q", _sh(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip()], cwd=dest)
    listed = _sh(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
        elif not src.exists() and (dest / rel).is_file():
            (dest / rel).unlink()  # deleted in the working tree
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src], cwd=tmp)
    (whl,) = (tmp / "dist").glob("lyabook-*.whl")
    return whl


def test_wheel_holds_the_package_notebooks_and_profiles_but_no_tests_or_results(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"lyabook/notebooks/{nb.name}" in names
        for profile in ("smoke", "full"):
            assert f"lyabook/notebooks/profiles/{profile}/{nb.stem}.yaml" in names
    assert not [n for n in names if n.startswith("tests/") or "/results/" in n or n.startswith("notebooks/")]
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)
    assert sum(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names) < 20e6


def test_a_tree_without_git_builds_with_the_fallback_version(tmp_path):
    import tomllib

    fallback = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools_scm"]["fallback_version"]
    src = tmp_path / "src"
    _source_copy(tmp_path / "clone")
    shutil.copytree(tmp_path / "clone", src, ignore=shutil.ignore_patterns(".git"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SETUPTOOLS_SCM", "GIT_"))}
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # no repository above the copy either
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src], cwd=tmp_path, env=env)
    assert [w.name.split("-")[1] for w in (tmp_path / "dist").glob("lyabook-*.whl")] == [fallback]


def test_wheel_installs_in_a_fresh_venv_and_runs_a_notebook_outside_the_repository(wheel, tmp_path):
    t0 = time.perf_counter()
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py, exe = venv / "bin" / "python", venv / "bin" / "lyabook"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _sh([py, "-m", "pip", "install", "-q", TORCH], cwd=tmp_path, env=env)  # pinned and first, as the Makefile does
    _sh([py, "-m", "pip", "install", "-q", wheel], cwd=tmp_path, env=env)
    t_install = time.perf_counter() - t0
    work = tmp_path / "work"
    work.mkdir()

    version = _sh([exe, "--version"], cwd=work, env=env).stdout.strip()
    wheel_version = wheel.name.split("-")[1]
    assert version == f"lyabook {wheel_version}"

    # notebooks and profiles come from the installed package, never site-packages/notebooks
    probe = ("import json, lyabook; from lyabook import cli; "
             "print(json.dumps([str(cli.NOTEBOOKS), cli.is_source_checkout(), cli.notebook_names(), "
             "cli.load_profile('03_training_evolution', 'full'), lyabook.__version__]))")
    where, checkout, names, full03, pkg_version = json.loads(_sh([py, "-c", probe], cwd=work, env=env).stdout)
    site = Path(_sh([py, "-c", "import lyabook; print(lyabook.__file__)"], cwd=work, env=env).stdout.strip()).parent
    assert Path(where) == site / "notebooks" and str(venv) in where and not checkout
    assert names == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert full03["char_hidden"] == 512 and pkg_version == wheel_version

    # build needs the book's sources: one line, nothing built
    res = subprocess.run([exe, "build", "--out", work / "book"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "source checkout" in res.stderr
    assert not (work / "book").exists()

    out = work / "executed"
    res = subprocess.run([exe, "run", "--profile", "smoke", "--device", "cpu", "--only", "00", "--out", out],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    nb = json.loads((out / "00_errata.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] is not None for c in code)
    assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    colab = "".join(code[0]["source"])
    ref = wheel_version.partition("+g")[2].split(".")[0] or f"v{wheel_version}"
    assert f"lyabook @ git+https://github.com/lyabook/lyabook@{ref}\"" in colab
    print(f"\nwheel test: fresh venv + install {t_install:.0f} s, total {time.perf_counter() - t0:.0f} s")
