"""The notebooks and their nbval references: executed, error-free, in sync, and runnable.

The references in tests/notebooks are smoke-profile executed copies (``make references``);
``make test`` re-executes them with nbval and compares the cells tagged nbval-check-output.
"""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from lyabook import cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REFERENCES = sorted((ROOT / "tests" / "notebooks").glob("*.ipynb"))


def _read(path):
    return nbformat.read(path, as_version=4)


def _tags(cell):
    return cell.metadata.get("tags", [])


def _colab_cell(nb):
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    return first_code if cli.is_colab_cell(first_code) else None


def _sources(nb):
    """Cells as (type, source), without papermill's injected cell and the Colab cell (which
    pins the commit a notebook was rendered from: references and notebooks differ there)."""
    colab = _colab_cell(nb)
    return [(c.cell_type, c.source) for c in nb.cells if "injected-parameters" not in _tags(c) and c is not colab]


def test_there_are_notebooks_and_one_reference_each():
    assert NOTEBOOKS, "no notebooks found"
    assert [p.name for p in REFERENCES] == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS + REFERENCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_fully_executed_without_errors(path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name}: a code cell was not executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: stored error output {errors[0].get('ename')}"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.name)
def test_reference_cells_equal_the_notebook_apart_from_injected_parameters_and_colab_cell(path):
    assert _sources(_read(path)) == _sources(_read(ROOT / "notebooks" / path.name)), (
        f"{path.name}: the reference has drifted from notebooks/{path.name}; run `make references`"
    )


def _parameters(nb):
    cells = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return {t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_layout_colab_cell_parameters_and_profiles(path):
    nb = _read(path)
    colab = _colab_cell(nb)
    assert colab is not None, "the first code cell is the Colab cell"
    assert "nbval-skip" in _tags(colab), "nbval must skip the Colab cell"
    assert not {"remove-cell", "remove-input", "hide-cell", "hide-input"} & set(_tags(colab)), "the Colab cell is visible"
    pinned = re.search(r"lyabook @ git\+https://github\.com/lyabook/lyabook@([0-9a-f]{40}|v[0-9][^\"\s]*)\"", colab.source)
    assert pinned, "the Colab cell installs lyabook at a pinned commit or tag, without extras; re-render with `lyabook run`"
    assert colab.source == cli.colab_cell_source(pinned.group(1)), "the Colab cell is cli.colab_cell_source's"
    params = _parameters(nb)
    assert {"profile", "device", "results_dir"} <= params
    for profile in cli.PROFILES:
        prof = yaml.safe_load((ROOT / "notebooks" / "profiles" / profile / f"{path.stem}.yaml").read_text())
        assert set(prof) <= params, f"{profile} profile of {path.stem} sets unknown parameters {set(prof) - params}"
    assert any("nbval-check-output" in _tags(c) for c in nb.cells), "no cell is compared by nbval"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_ran_full_profile_and_saved_results_with_provenance(path):
    nb = _read(path)
    injected = [c for c in nb.cells if "injected-parameters" in _tags(c)]
    assert injected and 'profile = "full"' in injected[0].source
    assert 'device = "auto"' in injected[0].source, "committed notebooks are rendered with --device auto"
    results = json.loads((ROOT / "notebooks" / "results" / f"{path.stem}.json").read_text())
    prov = results["provenance"]
    assert prov["profile"] == "full" and {"device", "torch", "lyabook", "date", "wall_time_s"} <= set(prov)


def test_cli_rejects_unknown_profile_notebook_and_device(capsys):
    assert cli.main(["run", "--profile", "huge"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert cli.main(["run", "--only", "99_nothing"]) == 2
    assert "is not a notebook" in capsys.readouterr().err
    assert cli.main(["run", "--device", "tpu"]) == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    with pytest.raises(cli.CLIError, match="unknown profile 'huge'"):
        cli.load_profile("00_errata", "huge")


def test_cli_run_reports_the_failed_notebook_and_cell(tmp_path, capsys):
    root = tmp_path / "nbs"
    (root / "profiles" / "smoke").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("profile = 'full'\ndevice = 'cpu'\nx = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x)"), nbformat.v4.new_code_cell("1 / (x - 2)")]
    nbformat.write(nb, root / "bad.ipynb")
    (root / "profiles" / "smoke" / "bad.yaml").write_text("x: 2\n")
    rc = cli.run("smoke", "cpu", None, tmp_path / "out", root=root)
    captured = capsys.readouterr()
    assert rc == 1
    assert "notebook bad failed in cell" in captured.err and "ZeroDivisionError" in captured.err
    assert "bad" in captured.out and "FAILED" in captured.out


def test_book_builds_without_warnings(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lyabook", "build", "--out", str(tmp_path / "book")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "book" / "_build" / "html" / "notebooks" / "01_lorenz.html").is_file()


def test_cli_exec_runs_a_notebook_without_jupyter_and_names_the_failed_cell(tmp_path, capsys):
    root = tmp_path / "nbs"
    (root / "profiles" / "smoke").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'full'\ndevice = 'cpu'\nx = 1")
    params.metadata["tags"] = ["parameters"]
    colab = nbformat.v4.new_code_cell("%pip install nothing")
    colab.metadata["tags"] = ["nbval-skip"]
    nb.cells = [colab, params, nbformat.v4.new_code_cell("open('out.txt', 'w').write(str(x) + profile)"),
                nbformat.v4.new_code_cell("1 / (x - 3)")]
    nbformat.write(nb, root / "demo.ipynb")
    (root / "profiles" / "smoke" / "demo.yaml").write_text("x: 2\n")
    assert cli.exec_notebook(root / "demo.ipynb", "smoke", "cpu", tmp_path / "o1") == 0
    assert (tmp_path / "o1" / "out.txt").read_text() == "2smoke"
    assert cli.exec_notebook(root / "demo.ipynb", "smoke", "cpu", tmp_path / "o2", {"x": 3}) == 1
    assert "notebook demo failed in cell 3: ZeroDivisionError" in capsys.readouterr().err


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_colab_pin_holds_the_lyabook_modules_the_notebook_imports(path):
    """A Colab user installs lyabook at the pinned commit: it must hold every ``lyabook.X`` the
    notebook imports (a page rendered before its code was committed pins a commit without it:
    notebook 03 once pinned one without ``lyabook.evolution``). Skipped outside a git checkout
    or where the commit is not in this clone's history (a shallow clone)."""
    nb = _read(path)
    pinned = re.search(r"lyabook@([0-9a-f]{40})", _colab_cell(nb).source)
    if pinned is None:
        pytest.skip("pinned to a tag")
    sha = pinned.group(1)
    if _git("cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {sha[:12]} is not in this clone")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.lstrip().startswith(("%", "!")))
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module == "lyabook":
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lyabook."):
            modules.add(node.module.split(".")[1])
    assert modules, f"{path.name} imports nothing from lyabook"
    missing = sorted(m for m in modules
                     if _git("cat-file", "-e", f"{sha}:lyabook/{m}.py").returncode != 0
                     and _git("cat-file", "-e", f"{sha}:lyabook/{m}/__init__.py").returncode != 0
                     and _git("grep", "-q", "-w", m, sha, "--", "lyabook/__init__.py").returncode != 0)
    assert not missing, f"{path.name}: its Colab cell pins {sha[:12]}, which lacks lyabook's {', '.join(missing)}; " \
                        "commit the code, then render"
