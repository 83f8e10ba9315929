"""Claims of the result files (lyabook.results): NaN and infinity come back as floats, every
reading error names the file, a record is complete once its JSON exists, provenance names the
code version, committed training records load unchanged, and the committed results match their
manifest."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lyabook import results as R
from lyabook.provenance import load_results, provenance, resolve_device, save_results  # the notebooks' import
from lyabook.train import run_hash

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "notebooks" / "results"
RUNS = RESULTS / "03_training_evolution_runs"


def _strict(text):
    """Parse as standard JSON: NaN / Infinity literals are an error."""
    def no(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=no)


def _strings(obj):
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


# ------------------------------------------------------------------ NaN and infinity
def test_nan_and_inf_round_trip_as_floats_in_scalars_nested_lists_arrays_and_tensors(tmp_path):
    res = {"scalar": float("nan"), "pos": math.inf, "neg": -math.inf, "none": None, "text": "kept",
           "nested": [[1.0, float("nan")], [math.inf, -2.5]], "array": np.array([[np.nan, 1.0], [2.0, -np.inf]]),
           "tensor": torch.tensor([1.0, float("inf"), float("nan")], dtype=torch.float64), "np_scalar": np.float32("nan"),
           "deep": {"a": [{"b": [float("nan")]}]}, "flag": np.bool_(True), "count": np.int64(3)}
    path = save_results(tmp_path / "r.json", res, {"profile": "test", "wall": float("nan")})
    _strict(path.read_text())  # standard JSON: no NaN / Infinity literals
    back = load_results(path)
    r = back["results"]
    assert math.isnan(r["scalar"]) and r["pos"] == math.inf and r["neg"] == -math.inf
    assert r["none"] is None and r["text"] == "kept" and r["flag"] is True and r["count"] == 3
    a = np.asarray(r["nested"])
    assert a.dtype == np.float64 and np.isnan(a[0, 1]) and a[1, 0] == np.inf and a[1, 1] == -2.5
    np.testing.assert_array_equal(np.asarray(r["array"]), res["array"])  # NaN == NaN here
    np.testing.assert_array_equal(np.asarray(r["tensor"]), res["tensor"].numpy())
    assert math.isnan(r["np_scalar"]) and math.isnan(r["deep"]["a"][0]["b"][0])
    assert math.isnan(back["provenance"]["wall"])
    assert not [s for s in _strings(r) if s in ("nan", "inf", "-inf")]


def test_files_written_before_hold_nan_strings_and_they_load_as_floats(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps(
        {"provenance": {"profile": "full"},
         "results": {"stderr": ["nan", "nan", "nan"], "x": "inf", "rows": [[1.0, "-inf"]], "NaN_literal": float("nan")}}))
    r = load_results(tmp_path / "old.json")["results"]
    assert all(math.isnan(v) for v in r["stderr"]) and r["x"] == math.inf and r["rows"] == [[1.0, -math.inf]]
    assert math.isnan(r["NaN_literal"])  # Python's non-standard NaN literal is read too


def test_committed_results_load_and_hold_no_nan_strings():
    for f in sorted(RESULTS.glob("*.json")):
        if f.name == R.MANIFEST_NAME:
            continue
        r = load_results(f)["results"]
        assert not [s for s in _strings(r) if s in ("nan", "inf", "-inf")], f.name
    stderr = load_results(RESULTS / "01_lorenz.json")["results"]["spectra"]["28.0"]["dissertation_setting"]["stderr"]
    assert json.loads((RESULTS / "01_lorenz.json").read_text())["results"]["spectra"]["28.0"]["dissertation_setting"][
        "stderr"] == ["nan"] * 3  # as committed (one trajectory: no standard error) ...
    assert all(isinstance(v, float) and math.isnan(v) for v in stderr)  # ... and read back as floats


# ------------------------------------------------------------------ errors name the file
def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(R.ResultsError, match="nothing.json") as err:
        load_results(tmp_path / "nothing.json")
    assert isinstance(err.value, FileNotFoundError)  # callers that caught FileNotFoundError still do


def test_a_truncated_file_is_an_error_naming_it_with_line_and_column(tmp_path):
    path = save_results(tmp_path / "cut.json", {"x": list(range(50))}, {"profile": "test"})
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(R.ResultsError, match=r"cut\.json: invalid JSON at line \d+, column \d+") as err:
        load_results(path)
    assert isinstance(err.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize("doc", [
    [1, 2],
    {"results": {"x": 1}},
    {"provenance": {}, "results": [1, 2]},
    {"provenance": "cpu", "results": {}},
    {"provenance": {}, "results": {}, "extra": 1},
    {"provenance": {}, "results": {}, "arrays": "x.npz"},
], ids=["list", "no-provenance", "results-not-dict", "provenance-not-dict", "extra-key", "bad-arrays"])
def test_a_file_not_laid_out_as_results_is_an_error_naming_it(tmp_path, doc):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(R.ResultsError, match="odd.json"):
        load_results(path)


def test_a_damaged_npz_is_an_error_naming_it(tmp_path):
    path = save_results(tmp_path / "a.json", {"n": 1}, {"p": 1}, arrays={"x": np.arange(1000.0)})
    npz = tmp_path / "a.npz"
    blob = npz.read_bytes()
    npz.write_bytes(blob[: len(blob) // 2])  # cut short: its sha256 no longer matches the JSON's
    with pytest.raises(R.ResultsError, match=r"a\.npz: does not match .*a\.json"):
        load_results(path)
    npz.unlink()
    with pytest.raises(R.ResultsError, match=r"a\.npz: the arrays of .*a\.json are missing"):
        load_results(path)
    assert load_results(path, arrays=False)["results"] == {"n": 1}  # the JSON alone is still readable


def test_a_damaged_npz_of_an_old_record_is_an_error_naming_it(tmp_path):
    # the layout of training records written before lyabook.results (no sha256 to compare)
    np.savez_compressed(tmp_path / "epoch_000.npz", exponents=np.ones((2, 3), np.float32))
    (tmp_path / "epoch_000.json").write_text(json.dumps({"provenance": {}, "results": {"epoch": 0, "arrays": "epoch_000.npz"}}))
    r = load_results(tmp_path / "epoch_000.json")["results"]
    assert r["epoch"] == 0 and "arrays" not in r and r["exponents"].dtype == np.float32
    blob = (tmp_path / "epoch_000.npz").read_bytes()
    (tmp_path / "epoch_000.npz").write_bytes(blob[:-30])  # the zip's directory is gone
    with pytest.raises(R.ResultsError, match=r"epoch_000\.npz: damaged .*BadZipFile"):
        load_results(tmp_path / "epoch_000.json")


def test_an_npz_without_the_listed_array_is_an_error_naming_it(tmp_path):
    path = save_results(tmp_path / "k.json", {}, {}, arrays={"x": np.zeros(3)})
    doc = json.loads(path.read_text())
    doc["arrays"]["keys"].append("y")
    path.write_text(json.dumps(doc))
    with pytest.raises(R.ResultsError, match=r"k\.npz: damaged .*KeyError"):
        load_results(path)


# ------------------------------------------------------------------ one writer: JSON + NPZ
def test_arrays_go_to_an_npz_beside_the_json_and_come_back_with_their_dtypes(tmp_path):
    x32 = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    t64 = torch.randn(3, dtype=torch.float64)
    path = save_results(tmp_path / "rec.json", {"epoch": 2, "loss": [0.5, float("nan")]}, {"profile": "t"},
                        arrays={"exponents": x32, "t": t64})
    doc = _strict(path.read_text())
    assert doc["arrays"]["file"] == "rec.npz" and doc["arrays"]["keys"] == ["exponents", "t"]
    assert (tmp_path / "rec.npz").is_file() and "exponents" not in doc["results"]
    r = load_results(path)["results"]
    assert r["exponents"].dtype == np.float32 and np.array_equal(r["exponents"], x32)
    assert np.array_equal(r["t"], t64.numpy()) and r["epoch"] == 2 and math.isnan(r["loss"][1])
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="keys of both"):
        save_results(tmp_path / "clash.json", {"exponents": 1}, {}, arrays={"exponents": x32})


def _kill_before_json_rename(monkeypatch, renames):
    real = os.replace

    def replace(src, dst):
        renames.append(Path(dst).name)
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt("killed before the JSON's rename")
        return real(src, dst)

    monkeypatch.setattr(R.os, "replace", replace)


def test_the_json_is_written_last_so_a_killed_write_leaves_no_record_that_loads(tmp_path, monkeypatch):
    renames = []
    _kill_before_json_rename(monkeypatch, renames)
    with pytest.raises(KeyboardInterrupt):
        save_results(tmp_path / "e.json", {"epoch": 1}, {}, arrays={"x": np.ones(3)})
    assert renames == ["e.npz", "e.json"]  # the NPZ first, the JSON last
    assert (tmp_path / "e.npz").is_file() and not (tmp_path / "e.json").exists()
    with pytest.raises(R.MissingResultsError):  # no JSON: the record does not exist (train_population reruns the epoch)
        load_results(tmp_path / "e.json")


def test_a_killed_overwrite_leaves_an_old_json_that_refuses_the_new_npz(tmp_path, monkeypatch):
    path = save_results(tmp_path / "e.json", {"epoch": 1}, {}, arrays={"x": np.ones(3)})
    _kill_before_json_rename(monkeypatch, [])
    with pytest.raises(KeyboardInterrupt):
        save_results(path, {"epoch": 1}, {}, arrays={"x": np.full(3, 2.0)})  # new NPZ renamed, JSON not
    monkeypatch.undo()
    with pytest.raises(R.ResultsError, match="does not match"):  # not a silent mix of old and new
        load_results(path)


# ------------------------------------------------------------------ provenance
def test_provenance_names_the_code_version_machine_and_versions():
    prov = provenance("full", resolve_device("cpu"), 12.34, reductions={"n": {"this run": 1}})
    for key in ("profile", "device", "device_name", "lyabook", "git_commit", "git_dirty", "source_sha256", "torch",
                "numpy", "python", "platform", "host", "argv", "date", "wall_time_s"):
        assert key in prov, key
    assert prov["device"] == "cpu" and prov["wall_time_s"] == 12.3 and prov["reductions"] == {"n": {"this run": 1}}
    assert prov["date"].endswith("+00:00")  # UTC
    assert prov["source_sha256"] == R._source_sha256(ROOT / "lyabook") and len(prov["source_sha256"]) == 64
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and (ROOT / ".git").exists():
        assert prov["git_commit"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)
    json.dumps(prov, allow_nan=False)  # JSON as it is


def test_records_provenance_of_a_merged_record_covers_every_shard_and_part():
    """A population merged from shards, one of them from parts trained in a later session from
    another commit: the run's provenance names both commits and spans every part's date, not
    only the first shard's (which the merged record's own keys repeat)."""
    made = lambda commit, date: {"device": "NVIDIA H200", "device_name": "NVIDIA H200", "git_commit": commit,
                                 "source_sha256": commit * 2, "torch": "2.11", "date": date}
    merged = {**made("aaa", "2026-11-28T04:35:41+00:00"), "host": "vm",
              "shards": [{"index": 0, "of": 2, **made("aaa", "2026-11-28T04:35:41+00:00")},
                         {"index": 1, "of": 2, "parts": [{"index": j, "of": 2, **made("bbb", f"2026-11-29T1{j}:00:00+00:00")}
                                                         for j in range(2)]}]}
    out = R.records_provenance([merged, {**made("ccc", "2026-11-30T00:00:00+00:00"), "host": "box"}])
    assert out["git_commit"] == "aaa, bbb, ccc" and out["source_sha256"] == "aaaaaa, bbbbbb, cccccc"
    assert out["date"] == "2026-11-28T04:35:41+00:00 to 2026-11-30T00:00:00+00:00"
    assert out["device_name"] == "NVIDIA H200" and out["host"] == "box, vm"  # a shard's entry has no host: its record's
    assert R.records_provenance([made("aaa", "2026-11-28T00:00:00+00:00")])["date"] == "2026-11-28T00:00:00+00:00"


def test_the_source_hash_changes_with_any_source_byte_and_ignores_other_files(tmp_path):
    pkg = tmp_path / "lyabook"
    shutil.copytree(ROOT / "lyabook", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = R._source_sha256(pkg)
    (pkg / "notes.txt").write_text("not source")
    assert R._source_sha256(pkg) == before
    f = pkg / "lyapunov.py"
    f.write_bytes(f.read_bytes() + b" ")
    assert R._source_sha256(pkg) != before


def test_code_version_outside_a_checkout_of_lyabook_has_no_commit(tmp_path, monkeypatch):
    pkg = tmp_path / "site-packages" / "lyabook"  # an installed wheel inside some other repository
    shutil.copytree(ROOT / "lyabook", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(R, "_package_dir", lambda: pkg)
    info = R.code_version()
    assert info["git_commit"] is None and info["git_dirty"] is None and info["source_sha256"] == R._source_sha256(pkg)


# ------------------------------------------------------------------ committed training records
def test_committed_training_records_load_with_identical_numbers_and_keep_their_folder_hashes():
    runs = sorted(p for p in RUNS.iterdir() if p.is_dir())
    assert runs
    for run in runs:
        # a population's merged records, or the parts of one still training in shards
        # (shard-<i>-of-<n>/, merged when the last part is in)
        files = sorted(run.glob("epoch_*.json")) or sorted(run.glob("shard-*-of-*/epoch_*.json"))
        assert files
        for f in files:
            raw = json.loads(f.read_text())
            rec = load_results(f)
            want = dict(raw["results"])
            # the one writer's layout ("arrays" beside "results"), or the older one (inside it)
            npz = raw["arrays"]["file"] if "arrays" in raw else want.pop("arrays")
            with np.load(f.parent / npz) as z:
                arrays = {k: z[k] for k in z.files}
            got = rec["results"]
            assert set(got) == set(want) | set(arrays), f
            for k, v in want.items():
                assert got[k] == v, (f, k)
            for k, v in arrays.items():
                assert got[k].dtype == v.dtype and np.array_equal(got[k], v), (f, k)
            prov = rec["provenance"]
            assert prov["config_hash"] == run.name and prov["device"]
            # the folder name is the hash train_population computes (notebook 03 keeps the defaults),
            # from the configuration and the run settings the records were computed under
            assert run_hash(prov["config"], prov["run_settings"], 0.95, 10) == run.name


# ------------------------------------------------------------------ manifest
def test_committed_results_match_their_manifest():
    problems = R.check_manifest(RESULTS)
    assert not problems, ("notebooks/results changed without its manifest; if the change is intended, run "
                          "`python -m lyabook.results manifest notebooks/results`:\n" + "\n".join(problems))
    listed = json.loads((RESULTS / R.MANIFEST_NAME).read_text())["files"]
    assert "01_lorenz.json" in listed and listed["01_lorenz.json"]["written_by"] == "01_lorenz.ipynb"
    assert all(e["written_by"] for e in listed.values())


def _results_folder(tmp_path):
    (tmp_path / "01_demo.ipynb").write_text("{}")
    res = tmp_path / "results"
    save_results(res / "01_demo.json", {"x": [1.0, float("nan")]}, {"profile": "t"})
    run = res / "01_demo_runs" / "abc"
    save_results(run / "epoch_000.json", {"epoch": 0}, {}, arrays={"e": np.ones(2)})
    (run / "state.pt").write_bytes(b"checkpoint")  # never listed
    return res


def test_the_manifest_lists_every_result_with_sha256_size_and_notebook(tmp_path):
    res = _results_folder(tmp_path)
    path = R.write_manifest(res)
    files = json.loads(path.read_text())["files"]
    assert sorted(files) == ["01_demo.json", "01_demo_runs/abc/epoch_000.json", "01_demo_runs/abc/epoch_000.npz"]
    e = files["01_demo_runs/abc/epoch_000.npz"]
    data = (res / "01_demo_runs/abc/epoch_000.npz").read_bytes()
    assert e["bytes"] == len(data) and e["sha256"] == R._sha256(data) and e["written_by"] == "01_demo.ipynb"
    assert R.check_manifest(res) == []


def test_the_manifest_check_catches_a_changed_byte_a_missing_entry_and_a_missing_file(tmp_path):
    res = _results_folder(tmp_path)
    R.write_manifest(res)
    f = res / "01_demo.json"
    data = bytearray(f.read_bytes())
    data[-3] ^= 1
    f.write_bytes(bytes(data))
    problems = R.check_manifest(res)
    assert len(problems) == 1 and problems[0].startswith("01_demo.json: changed")
    R.write_manifest(res)
    assert R.check_manifest(res) == []
    man = json.loads((res / R.MANIFEST_NAME).read_text())
    del man["files"]["01_demo_runs/abc/epoch_000.npz"]
    (res / R.MANIFEST_NAME).write_text(json.dumps(man))
    assert R.check_manifest(res) == ["01_demo_runs/abc/epoch_000.npz: not listed in MANIFEST.json"]
    R.write_manifest(res)
    (res / "01_demo.json").unlink()
    assert R.check_manifest(res) == ["01_demo.json: listed in MANIFEST.json but missing"]
    (res / R.MANIFEST_NAME).unlink()
    assert "no manifest" in R.check_manifest(res)[0]


def test_the_manifest_command_writes_and_checks(tmp_path, capsys):
    res = _results_folder(tmp_path)
    assert R.main(["check", str(res)]) == 1
    assert R.main(["manifest", str(res)]) == 0 and "3 files" in capsys.readouterr().out
    assert R.main(["check", str(res)]) == 0
    (res / "new.json").write_text("{}")
    assert R.main(["check", str(res)]) == 1 and "new.json: not listed" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "lyabook.provenance", "check", str(res)], capture_output=True, text=True)
    assert out.returncode == 1 and "new.json: not listed" in out.stderr


def test_device_slug_names_result_files_by_card(monkeypatch):
    """cpu, or the GPU's name in lower case with underscores: an H200 run never overwrites an H100's."""
    import torch

    from lyabook.results import device_slug

    assert device_slug("cpu") == device_slug(torch.device("cpu")) == "cpu"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 80GB HBM3")
    assert device_slug("cuda") == "nvidia_h100_80gb_hbm3"
