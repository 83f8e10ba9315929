"""The command line (issue 9): --version, argparse choices, --set parsed with YAML 1.2 rules and
checked against the notebook's parameters cell, --out checks, the device injected as asked,
the rendered notebook's tags and Colab cell, and progress bars that reach the terminal but
never a notebook's outputs."""
import io
import re
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
import torch

import lyabook
from lyabook import cli, progress

ROOT = Path(__file__).resolve().parent.parent


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    return err


# ---------------------------------------------------------------- version

def test_version_comes_from_the_installed_metadata_and_the_cli_prints_it(capsys):
    assert lyabook.__version__ == version("lyabook")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lyabook {version('lyabook')}"


def test_pyproject_takes_the_version_from_setuptools_scm():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    scm = meta["tool"]["setuptools_scm"]
    assert scm["fallback_version"] and re.match(scm["tag_regex"], "v1.2.3") and not re.match(scm["tag_regex"], "1.2.3")
    deps = " ".join(meta["project"]["dependencies"])
    for needed in ("pandas", "pyyaml", "papermill", "nbformat", "ipykernel"):
        assert needed in deps, f"{needed} must be a core dependency (the CLI and the notebooks need it)"
    assert "seaborn" not in deps and "ipykernel>" not in deps.replace(" ", "")
    assert meta["project"]["optional-dependencies"]["book"] == ["jupyter-book==1.0.4.post1"]


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("command", ["run", "exec"])
def test_profile_and_device_are_argparse_choices(command, capsys):
    extra = ["x.ipynb"] if command == "exec" else []
    assert cli.main([command, *extra, "--profile", "huge"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert cli.main([command, *extra, "--device", "tpu"]) == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [
    ("6e2", 600.0), ("1e-3", 0.001), ("-5", -5), ("+3", 3), ("1.5", 1.5), ("010", 10), ("0x10", 16),
    ("true", True), ("False", False), ("yes", "yes"), ("off", "off"), ("null", None), ("", None),
    ("abc", "abc"), ("2024-01-01", "2024-01-01"), ("[1, 2e3, x]", [1, 2000.0, "x"]), ("'6e2'", "6e2"),
])
def test_set_values_follow_yaml_1_2(text, value):
    got = cli.parse_value(text)
    assert got == value and type(got) is type(value)
    assert cli.parse_overrides([f"n={text}"]) == {"n": value}


def test_profiles_are_read_with_the_same_rules_and_match_the_notebooks():
    for name in cli.notebook_names():
        for profile in cli.PROFILES:
            params = cli.notebook_parameters(name, profile, "auto")
            assert params["device"] == "auto" and params["profile"] == profile


def test_set_unknown_name_is_a_one_line_error_listing_the_valid_names(capsys):
    assert cli.main(["run", "--only", "00", "--set", "nsteps=5", "--out", "unused"]) == 2
    err = _error_line(capsys)
    assert "'nsteps'" in err and "n_steps" in err and "seed" in err
    assert cli.main(["run", "--set", "nope=3", "--out", "unused"]) == 2
    assert "none of the selected notebooks has a parameter 'nope'" in _error_line(capsys)


@pytest.mark.parametrize("value, expected", [("abc", "int"), ("1.5", "int"), ("[1]", "int"), ("true", "int"),
                                             ("null", "int")])
def test_set_value_of_the_wrong_type_is_a_one_line_error(value, expected, capsys):
    assert cli.main(["run", "--only", "00", "--set", f"n_steps={value}", "--out", "unused"]) == 2
    err = _error_line(capsys)
    assert "n_steps" in err and f"expects {expected}" in err and repr(cli.parse_value(value)) in err


def test_set_checks_types_against_the_defaults():
    # 6e2 is a number, and an integral one fits an int parameter (becomes 600)
    params = cli.notebook_parameters("00_errata", "smoke", "cpu", cli.parse_overrides(["n_steps=6e2"]))
    assert params["n_steps"] == 600 and type(params["n_steps"]) is int
    # an int fits a float parameter; a list a list; a None default takes anything
    assert cli.notebook_parameters("01_lorenz", "smoke", "cpu", {"dt": 1})["dt"] == 1
    assert cli.notebook_parameters("01_lorenz", "smoke", "cpu", {"rhos": [28.0]})["rhos"] == [28.0]
    assert cli.notebook_parameters("03_training_evolution", "smoke", "cpu", {"data_dir": "/x"})["data_dir"] == "/x"
    with pytest.raises(cli.CLIError, match="dt expects float"):
        cli.notebook_parameters("01_lorenz", "smoke", "cpu", {"dt": "fast"})
    with pytest.raises(cli.CLIError, match="profile"):
        cli.parse_overrides(["profile=full"])


def test_parameters_papermill_cannot_parse_are_still_found():
    # papermill skips a line with two '=' ("n = 40000  # (t = 40)"); the syntax tree does not
    declared = cli.declared_parameters(cli.NOTEBOOKS / "01_lorenz.ipynb")
    assert declared["n_steps_dissertation"] is int and declared["dt"] is float and declared["rhos"] is list


def test_parameters_are_found_without_papermill_too(monkeypatch):
    # `exec` serves headless machines that may lack papermill
    with_pm = cli.declared_parameters(cli.NOTEBOOKS / "02_vanilla_rnn.ipynb")
    monkeypatch.setitem(sys.modules, "papermill", None)
    assert cli.declared_parameters(cli.NOTEBOOKS / "02_vanilla_rnn.ipynb") == with_pm


def test_out_that_is_a_file_or_cannot_be_created_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert cli.main(["run", "--only", "00", "--out", str(f)]) == 2
    assert "is a file, not a folder" in _error_line(capsys)
    assert cli.main(["run", "--only", "00", "--out", str(f / "sub")]) == 2
    assert "cannot be created" in _error_line(capsys)
    assert cli.main(["exec", str(cli.NOTEBOOKS / "00_errata.ipynb"), "--out", str(f)]) == 2
    assert "is a file" in _error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_an_error(capsys):
    assert cli.main(["run", "--only", "00", "--device", "cuda"]) == 2
    assert "no CUDA device" in _error_line(capsys)


def test_no_notebooks_is_a_one_line_error(tmp_path):
    with pytest.raises(cli.CLIError, match="no notebooks found in"):
        cli.run("smoke", "cpu", None, tmp_path / "out", root=tmp_path)


def test_build_outside_a_source_checkout_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "ROOT", tmp_path)  # what an installed wheel sees: no book sources
    assert not cli.is_source_checkout()
    assert cli.main(["build", "--out", str(tmp_path / "book")]) == 2
    assert "build needs a source checkout" in _error_line(capsys)
    assert not (tmp_path / "book").exists()


def test_source_checkout_finds_its_own_notebooks():
    assert cli.is_source_checkout() and cli.NOTEBOOKS == ROOT / "notebooks"
    assert cli.load_profile("03_training_evolution", "full")["char_hidden"] == 512


# ---------------------------------------------------------------- the rendered notebook

def test_code_ref_is_the_checkout_commit():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert cli.code_ref() == head.stdout.strip()


def test_code_ref_from_an_installed_version(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "ROOT", tmp_path)
    monkeypatch.setattr(lyabook, "__version__", "0.2.1.dev3+gabc1234.d20260101")
    assert cli.code_ref() == "abc1234"
    monkeypatch.setattr(lyabook, "__version__", "0.3.0")
    assert cli.code_ref() == "v0.3.0"


def _run_colab_cell(source, monkeypatch, upgraded=()):
    """Execute the Colab cell as Colab would, with pip and the installed versions faked."""
    import importlib.metadata as md

    calls, installed = [], {"done": False}

    def fake_run(cmd, **kw):
        calls.append(cmd)
        installed["done"] = True
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def fake_version(dist):
        if dist == "lyabook":
            return "9.9.9"
        return "2.0" if installed["done"] and dist in upgraded else "1.0"

    class Dist:
        def __init__(self, name):
            self.metadata, self.version = {"Name": name}, fake_version(name)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(md, "version", fake_version)
    monkeypatch.setattr(md, "distributions", lambda: [Dist("numpy"), Dist("PyYAML"), Dist("other")])
    monkeypatch.setattr(md, "packages_distributions", lambda: {"numpy": ["numpy"], "yaml": ["PyYAML"],
                                                               "notimported_xyz": ["other"]})
    exec(compile(source, "colab-cell", "exec"), {"__name__": "__main__"})
    return calls


def test_colab_cell_pins_the_ref_installs_no_extras_and_says_when_to_restart(monkeypatch, capsys):
    ref = "0123456789abcdef0123456789abcdef01234567"
    source = cli.colab_cell_source(ref)
    assert len(source.splitlines()) <= 10
    # outside Colab: nothing at all
    assert _run_colab_cell(source, monkeypatch) == [] and capsys.readouterr().out == ""
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    calls = _run_colab_cell(source, monkeypatch)
    assert len(calls) == 1 and calls[0][-1] == f"lyabook @ git+https://github.com/lyabook/lyabook@{ref}"
    assert "[" not in calls[0][-1], "no extras: Colab has everything but lyabook"
    assert capsys.readouterr().out.strip() == "lyabook 9.9.9 installed"
    _run_colab_cell(source, monkeypatch, upgraded=("numpy",))
    out = capsys.readouterr().out.strip()
    assert out == ("Restart the runtime (Runtime > Restart session) and run this notebook again: "
                   "pip upgraded numpy")


def _tiny_notebook(root, colab_tags=("nbval-skip", "remove-cell")):
    (root / "profiles" / "smoke").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    colab = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n    %pip install lyabook[book]')
    colab.metadata["tags"] = list(colab_tags)
    params = nbformat.v4.new_code_cell('profile = "full"\ndevice = "cpu"\nn = 1  # steps (t = 1)')
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "import sys\n"
        "from lyabook.progress import bar\n"
        "for _ in bar(range(3), desc='BAR-ON-TERMINAL', mininterval=0):\n"
        "    pass\n"
        "print('printed', n, device)")
    nb.cells = [colab, params, work]
    nbformat.write(nb, root / "tiny.ipynb")
    (root / "profiles" / "smoke" / "tiny.yaml").write_text("n: 2e1\n")


def test_run_injects_the_requested_device_tags_cells_and_keeps_bars_out_of_outputs(tmp_path, monkeypatch, capfd):
    root = tmp_path / "nbs"
    _tiny_notebook(root)
    # the kernel must redirect its fd 2 into the notebook as it does outside pytest (ipykernel
    # turns that off when it sees PYTEST_CURRENT_TEST): a bar on sys.__stderr__ would leak then
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    rc = cli.run("smoke", "auto", None, tmp_path / "out", root=root)
    captured = capfd.readouterr()
    assert rc == 0, captured.err[-3000:]
    nb = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'device = "auto"' in injected[0].source and "n = 20\n" in injected[0].source
    assert "hide-cell" in injected[0].metadata.tags
    assert "hide-cell" in next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).metadata.tags
    colab = nb.cells[0]
    assert colab.source == cli.colab_cell_source(cli.code_ref())
    assert colab.metadata.tags == ["nbval-skip"], "visible in the book, skipped by nbval"
    stored = nbformat.writes(nbformat.from_dict({"outputs": [o for c in nb.cells for o in c.get("outputs", [])]}))
    assert "printed 20 auto" in stored
    assert "BAR-ON-TERMINAL" not in stored, "the progress bar leaked into the notebook's outputs"
    assert "BAR-ON-TERMINAL" in captured.err, "the progress bar did not reach the terminal"
    assert "printed 20 auto" in captured.out, "run echoes the notebook's printed output"
    assert "unknown parameter" not in captured.err, "checked by lyabook: papermill's warning is noise"


# ---------------------------------------------------------------- progress bars

def test_bar_writes_to_the_real_stderr_and_not_to_sys_streams(capfd, monkeypatch):
    fake_out, fake_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", fake_out)
    monkeypatch.setattr(sys, "stderr", fake_err)
    assert list(progress.bar(range(5), desc="steps-bar", mininterval=0)) == list(range(5))
    assert list(progress.bar(range(5), desc="silent-bar", progress=False)) == list(range(5))
    monkeypatch.undo()
    err = capfd.readouterr().err
    assert "steps-bar" in err and "5/5" in err and "silent-bar" not in err
    assert fake_out.getvalue() == "" and fake_err.getvalue() == ""


def test_lyapunov_spectrum_progress_changes_no_number(capfd):
    from lyabook.systems import Lorenz

    x0 = torch.tensor([[1.0, 1.0, 20.0]], dtype=torch.float64)
    quiet = lyabook.lyapunov_spectrum(Lorenz(), x0, n_steps=300, warmup=30, t_on=5, keep="r")
    loud = lyabook.lyapunov_spectrum(Lorenz(), x0, n_steps=300, warmup=30, t_on=5, keep="r", progress=True)
    assert torch.equal(quiet.per_sample, loud.per_sample) and torch.equal(quiet.log_r, loud.log_r)
    err = capfd.readouterr().err
    assert "Lyapunov spectrum" in err and "330/330" in err
    with pytest.raises(ValueError, match="progress"):
        lyabook.lyapunov_spectrum(Lorenz(), x0, n_steps=10, progress="yes")
