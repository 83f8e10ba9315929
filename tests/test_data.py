"""Data loaders on small files the tests make themselves (and on the real data when
LYABOOK_DATA_DIR points at it): directory lookup, checksums, atomic downloads, clear errors."""
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lyabook import data


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LYABOOK_DATA_DIR", str(tmp_path / "env"))
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv("LYABOOK_DATA_DIR")
    assert data.data_dir() == Path.home() / ".cache" / "lyabook"


def test_missing_file_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(data.DataError, match=r"war_and_peace/warpeace_input.txt is not in .*put the file at .*LYABOOK_DATA_DIR"):
        data.fetch("war_and_peace/warpeace_input.txt", tmp_path, download=False)


def test_checksum_mismatch_names_the_file(tmp_path):
    p = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    p.parent.mkdir()
    p.write_bytes(b"not mnist")
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz does not match its published sha256"):
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz", tmp_path, download=False)


def test_download_is_verified_and_atomic(tmp_path, monkeypatch):
    src = tmp_path / "server"
    src.mkdir()
    (src / "file.txt").write_bytes(b"hello")
    monkeypatch.setitem(data._SOURCES, "demo/", src.as_uri() + "/")
    root = tmp_path / "data"
    good = {"demo/file.txt": _sha(b"hello")}
    path = data.fetch("demo/file.txt", root, checksums=good)
    assert path.read_bytes() == b"hello"
    # a download that does not match is not kept, and no partial file is left behind
    bad = {"demo/other.txt": _sha(b"something else")}
    (src / "other.txt").write_bytes(b"tampered")
    with pytest.raises(data.DataError, match="does not match its published sha256; nothing was saved"):
        data.fetch("demo/other.txt", root, checksums=bad)
    assert sorted(p.name for p in (root / "demo").iterdir()) == ["file.txt"]
    # an unreachable source is a one-line error naming the file
    with pytest.raises(data.DataError, match="demo/missing.txt is not in .* could not be downloaded"):
        data.fetch("demo/missing.txt", root, checksums={})
    assert sorted(p.name for p in (root / "demo").iterdir()) == ["file.txt"]


def test_war_and_peace_decoding_split_and_batches(tmp_path, monkeypatch):
    text = "\ufeffAb\rcd\r\nef " * 200
    raw = text.encode("utf-8")
    p = tmp_path / "war_and_peace" / "warpeace_input.txt"
    p.parent.mkdir()
    p.write_bytes(raw)
    monkeypatch.setitem(data._SHA256, "war_and_peace/warpeace_input.txt", _sha(raw))
    c = data.load_war_and_peace(tmp_path, download=False)
    assert "\r" not in c.vocab and "\ufeff" not in c.vocab[:1] and "\n" in c.vocab
    n = len(c.train) + len(c.valid) + len(c.test)
    assert abs(len(c.train) / n - 0.8) < 0.01 and abs(len(c.valid) / n - 0.1) < 0.01
    x, y = data.char_batches(c.train, batch_size=4, seq_len=10)
    assert x.shape == y.shape and x.shape[1:] == (4, 10)
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1])
    with pytest.raises(ValueError, match="shorter than one batch"):
        data.char_batches(c.test, batch_size=100, seq_len=100)


def _write_mocap(root, frames=40, cols=6, seed=0):
    rng = np.random.default_rng(seed)
    sums = {}
    for split, n in (("train", 5), ("test", 1)):
        for cat in data.MOCAP_CATEGORIES:
            for i in range(1, n + 1):
                arr = rng.normal(size=(frames, cols))
                arr[:, 1] = 0.5  # constant dimension: dropped
                rel = f"cmu_mocap/{split}/{cat}/{cat}_{i}.txt"
                raw = "\n".join(",".join(f"{v:.6f}" for v in row) for row in arr).encode()
                p = root / (rel + ".gz")
                p.parent.mkdir(parents=True, exist_ok=True)
                gz = gzip.compress(raw, mtime=0)
                p.write_bytes(gz)
                sums[rel + ".gz"] = _sha(gz)
    return sums


def test_cmu_mocap_drops_constant_dimensions_normalizes_and_windows(tmp_path, monkeypatch):
    sums = _write_mocap(tmp_path)
    monkeypatch.setattr(data, "_SHA256", sums)
    mo = data.load_cmu_mocap(tmp_path, download=False, n_features=3)
    assert len(mo["train"]) == 20 and len(mo["test"]) == 4
    train = np.concatenate(mo["train"])
    assert train.shape[1] == 3
    np.testing.assert_allclose(train.std(0), 1.0, rtol=1e-5)
    (xt, yt), (xv, yv) = data.mocap_windows(mo["train"], history=25)
    assert xt.shape[1:] == (25, 3) and len(xt) + len(xv) == 20 * (40 - 25)
    assert abs(len(xt) / (len(xt) + len(xv)) - 0.8) < 0.01


def _idx(arr: np.ndarray, magic: int) -> bytes:
    return gzip.compress(struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes(), mtime=0)


def test_mnist_idx_loader_and_bad_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {}
    for stem, n in (("train", 12), ("t10k", 5)):
        files[f"mnist/{stem}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 2051)
        files[f"mnist/{stem}-labels-idx1-ubyte.gz"] = _idx(rng.integers(0, 10, n, dtype=np.uint8), 2049)
    for rel, b in files.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b)
    monkeypatch.setattr(data, "_SHA256", {k: _sha(v) for k, v in files.items()})
    m = data.load_mnist(tmp_path, download=False)
    assert m["train"][0].shape == (12, 28, 28) and m["test"][1].shape == (5,)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(struct.pack(">I", 1234) + b"\0" * 8))
    with pytest.raises(data.DataError, match="not an MNIST IDX file"):
        data._read_idx(bad)


def test_smoke_fallbacks_ship_with_installed_packages():
    text = data.fallback_text()
    assert "smoke fallback" in text.source and text.vocab_size > 50 and len(text.train) > 100_000
    digits = data.fallback_digits()
    assert digits["train"][0].dtype == torch.uint8 and digits["train"][0].shape[1:] == (8, 8)


real = pytest.mark.skipif(not os.environ.get("LYABOOK_DATA_DIR"), reason="LYABOOK_DATA_DIR not set")


@real
def test_real_war_and_peace_has_82_characters():
    assert data.load_war_and_peace(download=False).vocab_size == 82


@real
def test_real_mnist_has_the_standard_splits():
    m = data.load_mnist(download=False)
    assert m["train"][0].shape == (60000, 28, 28) and m["test"][0].shape == (10000, 28, 28)


# --------------------------------------------------------------------------- defect 8 of issue 10
def _small_data(root):
    """Tiny MNIST, War and Peace and mocap files under root; returns their checksums."""
    rng = np.random.default_rng(0)
    files = {}
    for stem, n in (("train", 3), ("t10k", 2)):
        files[f"mnist/{stem}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 2051)
        files[f"mnist/{stem}-labels-idx1-ubyte.gz"] = _idx(rng.integers(0, 10, n, dtype=np.uint8), 2049)
    files["war_and_peace/warpeace_input.txt"] = b"abc def\n" * 100
    for rel, b in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b)
    sums = {k: _sha(v) for k, v in files.items()}
    sums.update(_write_mocap(root, frames=30, cols=4))
    return sums


_LOADERS = {
    "mnist": (data.load_mnist, "mnist/t10k-labels-idx1-ubyte.gz"),
    "war_and_peace": (data.load_war_and_peace, "war_and_peace/warpeace_input.txt"),
    "mocap": (data.load_cmu_mocap, "cmu_mocap/test/walking/walking_1.txt.gz"),
}


@pytest.mark.parametrize("with_checksums", [True, False])
@pytest.mark.parametrize("loader", sorted(_LOADERS))
def test_unreadable_file_is_a_data_error_naming_it(tmp_path, monkeypatch, loader, with_checksums):
    # chmod 000 does not stop root (the tests' user), so opening the file raises as it would
    sums = _small_data(tmp_path)
    monkeypatch.setattr(data, "_SHA256", sums if with_checksums else {})
    load, rel = _LOADERS[loader]
    load(tmp_path, download=False)  # readable: loads
    target = tmp_path / rel

    def unreadable(path, *args, **kwargs):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(data, "open", unreadable, raising=False)
    with pytest.raises(data.DataError, match=rf"{target}.*cannot be read \(PermissionError: Permission denied\)"):
        load(tmp_path, download=False)


def test_file_that_becomes_unreadable_after_the_check_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_SHA256", _small_data(tmp_path))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(data.DataError, match="warpeace_input.txt cannot be read"):
        data.load_war_and_peace(tmp_path, download=False)
    monkeypatch.setattr(gzip, "open", denied)
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz cannot be read"):
        data._read_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match=r"cmu_mocap/train/\w+/\w+_1.txt.gz cannot be read"):
        data.load_cmu_mocap(tmp_path, download=False)


@pytest.mark.parametrize("download", [False, True])
def test_data_dir_that_is_a_file_says_so(tmp_path, monkeypatch, download):
    f = tmp_path / "data.tar"
    f.write_bytes(b"not a folder")
    monkeypatch.setitem(data._SOURCES, "demo/", (tmp_path / "server").as_uri() + "/")
    monkeypatch.setenv("LYABOOK_DATA_DIR", str(f))
    with pytest.raises(data.DataError, match=rf"LYABOOK_DATA_DIR={f} names a file, not a folder"):
        data.fetch("demo/x.txt", download=download)
    with pytest.raises(data.DataError, match="names a file, not a folder"):
        data.load_mnist(download=download)
    with pytest.raises(data.DataError, match="names a file, not a folder"):
        data.load_cmu_mocap(download=download)
    monkeypatch.setenv("LYABOOK_DATA_DIR", str(f / "sub"))
    with pytest.raises(data.DataError, match=rf"LYABOOK_DATA_DIR={f}/sub lies under {f}, which is a file, not a folder"):
        data.fetch("demo/x.txt", download=download)
    with pytest.raises(data.DataError, match=rf"the data directory {f} names a file, not a folder"):
        data.fetch("demo/x.txt", f, download=download)


@pytest.mark.parametrize("value", [0, -1])
def test_sizes_must_be_positive(tmp_path, value):
    ids = torch.arange(1000)
    rec = [np.zeros((40, 3), np.float32)]
    with pytest.raises(ValueError, match=rf"history must be a positive integer, got history={value}"):
        data.mocap_windows(rec, history=value)
    with pytest.raises(ValueError, match=rf"n_features must be a positive integer, got n_features={value}"):
        data.load_cmu_mocap(tmp_path, download=False, n_features=value)
    with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got batch_size={value}"):
        data.char_batches(ids, batch_size=value, seq_len=10)
    with pytest.raises(ValueError, match=rf"seq_len must be a positive integer, got seq_len={value}"):
        data.char_batches(ids, batch_size=10, seq_len=value)
    assert data.mocap_windows(rec, history=1)[0][0].shape[1:] == (1, 3)
    assert data.char_batches(ids, batch_size=1, seq_len=1)[0].shape == (999, 1, 1)


class _Dropping:
    """A response that sends one block, then fails with ``error``."""

    def __init__(self, error):
        self.error, self.sent = error, False

    def read(self, n):
        if not self.sent:
            self.sent = True
            return b"x" * 1000
        raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), KeyboardInterrupt()])
def test_interrupted_download_removes_its_part_file(tmp_path, monkeypatch, error):
    monkeypatch.setitem(data._SOURCES, "demo/", "https://example.invalid/")
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: _Dropping(error))
    with pytest.raises(data.DataError if isinstance(error, OSError) else KeyboardInterrupt):
        data.fetch("demo/file.txt", tmp_path, checksums={})
    assert list((tmp_path / "demo").iterdir()) == []


_KILLED_DOWNLOAD = """
import os, signal, sys
from lyabook import data
class Killed:
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def read(self, n):
        if not getattr(self, "sent", False):
            self.sent = True
            return b"partial"
        os.kill(os.getpid(), signal.SIGKILL)  # no finally runs
data._SOURCES["demo/"] = "https://example.invalid/"
data.urllib.request.urlopen = lambda url, timeout: Killed()
data.fetch("demo/file.txt", sys.argv[1], checksums={})
"""


def test_part_files_of_killed_downloads_are_not_data_and_go_on_the_next_download(tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    root = tmp_path / "data"
    r = subprocess.run([sys.executable, "-c", _KILLED_DOWNLOAD, str(root)], cwd=Path(data.__file__).parents[1])
    assert r.returncode == -9
    killed = list((root / "demo").glob("file.txt.*.part"))
    assert len(killed) == 1  # left behind: the process died mid-download
    # older versions named .part files file.txt.<random>.part: stale once not written to for an hour
    old = root / "demo" / "file.txt.k3j_x9a1.part"
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 7200,) * 2)
    # a download in progress in a live process (here: this one) is left alone
    live = root / "demo" / f"file.txt.{data._part_owner()}.abcd1234.part"
    live.write_bytes(b"in progress")
    # a .part file is never taken for the data
    with pytest.raises(data.DataError, match="demo/file.txt is not in"):
        data.fetch("demo/file.txt", root, download=False, checksums={})
    src = tmp_path / "server"
    src.mkdir()
    (src / "file.txt").write_bytes(b"hello")
    monkeypatch.setitem(data._SOURCES, "demo/", src.as_uri() + "/")
    path = data.fetch("demo/file.txt", root, checksums={"demo/file.txt": _sha(b"hello")})
    assert path.read_bytes() == b"hello"
    assert sorted(p.name for p in (root / "demo").iterdir()) == sorted(["file.txt", live.name])


def test_sequential_mnist_rows_and_one_fixed_permutation():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    rows = data.mnist_sequences(images, "row")
    assert rows.shape == (3, 28, 28) and rows.dtype == torch.float32
    assert torch.equal(rows, images.float() / 255)
    perm = data.mnist_sequences(images, "permuted")
    again = data.mnist_sequences(images[1:], "permuted")
    assert perm.shape == (3, 784, 1) and torch.equal(perm[1:], again)  # the same permutation for every image and call
    assert torch.equal(perm[0, :, 0].sort().values, rows[0].flatten().sort().values)  # a permutation of the pixels
    assert not torch.equal(perm[0, :, 0], rows[0].flatten())
    assert not torch.equal(data.mnist_sequences(images, "permuted", permutation_seed=1), perm)
    with pytest.raises(ValueError, match="order"):
        data.mnist_sequences(images, "column")
    with pytest.raises(ValueError, match="images"):
        data.mnist_sequences(images[0], "row")


def test_each_network_gets_its_own_subset_independent_of_the_others():
    x = torch.arange(10 * 2 * 3).reshape(10, 2, 3)
    b = data.NetworkBatches(x, x + 1, n_networks=4, fraction=0.3, seed=5)
    assert len(b) == 3 and b.index.shape == (4, 3)
    assert all(len(set(r.tolist())) == 3 for r in b.index)  # without replacement
    assert len({tuple(r.tolist()) for r in b.index}) > 1  # different networks, different subsets
    xb, yb = b[1]
    assert xb.shape == (4, 2, 3) and torch.equal(xb, x[b.index[:, 1]]) and torch.equal(yb, xb + 1)
    shard = b.select(range(2, 4))
    assert torch.equal(shard.index, b.index[2:])
    alone = data.NetworkBatches(x, x + 1, n_networks=2, fraction=0.3, seed=5, first_network=2)
    assert torch.equal(alone.index, b.index[2:])  # network i's subset depends only on (seed, i)
    for kw, match in [({"fraction": 0}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"n_networks": 0}, "n_networks")]:
        with pytest.raises(ValueError, match=match):
            data.NetworkBatches(x, x, **{"n_networks": 2, "fraction": 0.2, **kw})


def test_batches_cover_the_data_once_in_a_fixed_shuffled_order():
    x, y = torch.arange(10), torch.arange(10) * 2
    bs = data.batches(x, y, 4, shuffle_seed=0)
    assert [len(b[0]) for b in bs] == [4, 4, 2]
    assert sorted(torch.cat([b[0] for b in bs]).tolist()) == list(range(10))
    assert all(torch.equal(b[1], b[0] * 2) for b in bs)
    assert [len(b[0]) for b in data.batches(x, y, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(x, y, 0)
