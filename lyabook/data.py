"""Data sets of the dissertation: War and Peace (CharRNN), CMU motion capture, MNIST.

Every loader finds its files in a data directory: the ``data_dir`` argument, else the
``LYABOOK_DATA_DIR`` environment variable, else the user cache ``~/.cache/lyabook``. Files
are verified against their published sha256 before use (a mismatch is an error naming the
file). A missing file is downloaded from its public source when ``download=True`` (the
default) and the network allows, written atomically: a failed or interrupted download removes
its ``.part`` file, and the next download of a file removes ``.part`` files that a killed
process left. Otherwise the error says which file to put where. A file that exists but cannot
be read (permissions) is a `DataError` naming it, like a missing or corrupt one. The smoke
profile may instead use data that ships with installed packages (`fallback_digits`,
`fallback_text`); notebooks then say so.

The project commits none of these files.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
import struct
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "data_dir", "fetch", "load_war_and_peace", "CharCorpus", "char_batches",
    "load_cmu_mocap", "mocap_windows", "load_mnist", "fallback_digits", "fallback_text",
    "MOCAP_CATEGORIES", "DataError",
]

MOCAP_CATEGORIES = ("basketball", "soccer", "walking", "jumping")

_SOURCES = {
    "mnist/": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "war_and_peace/warpeace_input.txt": "https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt",
    "cmu_mocap/": "https://raw.githubusercontent.com/chaneyddtt/Convolutional-Sequence-to-Sequence-Model-for-Human-Dynamics/master/data/cmu_mocap/",
}

_SHA256 = {
    "cmu_mocap/test/basketball/basketball_1.txt.gz": "a800fa58712be7d1f25113d9ee26054c5c163f5c711c37cb52e936b1e309de11",
    "cmu_mocap/test/jumping/jumping_1.txt.gz": "95f43acddd5af303f4bc961337150dd5bc65dfc2d36ac7a6e6c479af2f4b0774",
    "cmu_mocap/test/soccer/soccer_1.txt.gz": "8ebf401353113ed5b109e30117c969f6a19c2ceea0e687bb7d2131b52f87220b",
    "cmu_mocap/test/walking/walking_1.txt.gz": "a3255c58ddcbaaecc23d681b9cc49de018b74ff801a40750499e84d0c208b7d0",
    "cmu_mocap/train/basketball/basketball_1.txt.gz": "3d6dd8d6bc6135e05711d0e18c2af117effb8a8e8d41b82d61f1b854fa48f809",
    "cmu_mocap/train/basketball/basketball_2.txt.gz": "922fd94ba10e4727a73495e810f14c7a5960e20fc8a4d2f2649a6d3a63bd854a",
    "cmu_mocap/train/basketball/basketball_3.txt.gz": "6865fd8524d3363edfb6d6a4ca2e7557f7bb0ae3534f45b4b2f58ad5da825d8a",
    "cmu_mocap/train/basketball/basketball_4.txt.gz": "057d740f318d483d36924a6c437420244e8cc6b76660838956eeb4ca27cef7f0",
    "cmu_mocap/train/basketball/basketball_5.txt.gz": "0a9e6fb05add7520977ade6bc258c73d18b7014f395c688d3199f474b847829d",
    "cmu_mocap/train/jumping/jumping_1.txt.gz": "6baf9845d51867521e5a4845225de67bab636d793e932c368e2746c60a4888c7",
    "cmu_mocap/train/jumping/jumping_2.txt.gz": "276210fe92cefcb18074816c230cc26b228f155d5006cd85f1c6fc76cf9f1524",
    "cmu_mocap/train/jumping/jumping_3.txt.gz": "76fed37a1ea8976bcc540164d3d7b95c0392f9a3bab76e77cf10deb57f3e6e37",
    "cmu_mocap/train/jumping/jumping_4.txt.gz": "5f193a33fb06a639a08272568f02332c92d670ba7f519fc693c3b6fe5728f861",
    "cmu_mocap/train/jumping/jumping_5.txt.gz": "4a2602fc91cd837ce3b8d7f412ea7b6efec39bc466a0033efa016385392434e8",
    "cmu_mocap/train/soccer/soccer_1.txt.gz": "e2c2b2e6e76ccd4a624f69573320d2c965714d1307b95e84647c6600f24f7a38",
    "cmu_mocap/train/soccer/soccer_2.txt.gz": "c67cb0976fbb5fe3479b902b425202c52071b6ef6bd57e9974abd1d8538340b1",
    "cmu_mocap/train/soccer/soccer_3.txt.gz": "2911b4826ebe2ce7ba11cbefba2a2bc539ca4774a4c4897cec6359e13502dd51",
    "cmu_mocap/train/soccer/soccer_4.txt.gz": "fe3933238290adf435af4dfbadda543d274a0e961072ef8a6c7fa8fccac71ffd",
    "cmu_mocap/train/soccer/soccer_5.txt.gz": "40aff07cd18e2f255b9b03d068154865a7fa8f5aed3f3021ac8b06d595a974f1",
    "cmu_mocap/train/walking/walking_1.txt.gz": "e0f95a5255bc0134a31e48e8b20d2b03744c1fbf199bf09147a667a175d6ca95",
    "cmu_mocap/train/walking/walking_2.txt.gz": "ef61335fcd6d3e6a3ff14a19fc4787fc9463d66f97e0fc48fa575000df617345",
    "cmu_mocap/train/walking/walking_3.txt.gz": "82a1d678a1d107d55967d970f9e3873e8d95160a03f919adc03835f4f5dde5ef",
    "cmu_mocap/train/walking/walking_4.txt.gz": "54f8507f53263e9a97f2790ce6552baa291b0137d9aca60b995a8237ef486e4e",
    "cmu_mocap/train/walking/walking_5.txt.gz": "7b40a9286184884010d678df1f2ceb50ba6ca1cc7dd050de4726126cbb245314",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "mnist/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "war_and_peace/warpeace_input.txt": "0139dcd32c37853541e8710281c32d823bb8ea86a86578916305bad06e3da0ea",
    "cmu_mocap/test/basketball/basketball_1.txt": "85e29ef050c68ebc1f6a865bd0f9bbbeed11af124cf2477b3317cee42307c701",  # as served uncompressed
    "cmu_mocap/test/jumping/jumping_1.txt": "bba6e585edc8efd6ca5a5f9820878a7eebe42e6bc78396d7c2ec079f43d58968",  # as served uncompressed
    "cmu_mocap/test/soccer/soccer_1.txt": "1942216b67a39128edb090db164a1fb2a2f1fcfc240413e93c5f6722bed8f4b9",  # as served uncompressed
    "cmu_mocap/test/walking/walking_1.txt": "189d6f44e6193520e6438692bce77c6b6594a8c26ead09d90b63c88acbbe3363",  # as served uncompressed
    "cmu_mocap/train/basketball/basketball_1.txt": "7c21f4c0d861a5489e0cde47026eaf97707fb5dd0d29adf19addd6c97bc3736c",  # as served uncompressed
    "cmu_mocap/train/basketball/basketball_2.txt": "cc6c19845c755ee255495cf26d2b068471b1fadc01d18aeaa7498c66392a1680",  # as served uncompressed
    "cmu_mocap/train/basketball/basketball_3.txt": "59c8b75e5e930c5dbe8a65e4e0a1012ca2fd3e9725137f755aeca2bca4e8fed8",  # as served uncompressed
    "cmu_mocap/train/basketball/basketball_4.txt": "91771bae89ba73abc131c00d027aa23904fa8a99095f3eee2aa4a38c39fe40eb",  # as served uncompressed
    "cmu_mocap/train/basketball/basketball_5.txt": "177a424d5417e99a846350e8b7841598825d1b20792ad10d5023e61a2f7ae77f",  # as served uncompressed
    "cmu_mocap/train/jumping/jumping_1.txt": "1441aa13e9ed397d88603db851596f11721d15f31508134c3d260e0948a91b6d",  # as served uncompressed
    "cmu_mocap/train/jumping/jumping_2.txt": "d1d1e3c8776771d3bb03d2a6e43d9ae34d0cc972222d2168c4af361ee9677dbf",  # as served uncompressed
    "cmu_mocap/train/jumping/jumping_3.txt": "96f03066d3c808b334bae1a12e6a15b2315cacbda8df1160cd3ae16dcc2ac0c7",  # as served uncompressed
    "cmu_mocap/train/jumping/jumping_4.txt": "866f1b2e5e879c24c0b369b03de17bad9b60441d7417e5b4e6e44bf2d59ca58a",  # as served uncompressed
    "cmu_mocap/train/jumping/jumping_5.txt": "59db2b8a4639378a0de9b572d951c300e560e2e29ef3ff543cef502394ed678b",  # as served uncompressed
    "cmu_mocap/train/soccer/soccer_1.txt": "c238012cd3dd2147f77a9f78b9da9096341848c789b8cf2409adecbff195fba2",  # as served uncompressed
    "cmu_mocap/train/soccer/soccer_2.txt": "b7eb2d445332867815336ea417bdf67a86a29e29554322dc7c6fab8e47d31783",  # as served uncompressed
    "cmu_mocap/train/soccer/soccer_3.txt": "1cad2b1fe63b81f419e4e65ace483328d9f99293083f779199c5f037df0a28d2",  # as served uncompressed
    "cmu_mocap/train/soccer/soccer_4.txt": "5355451997838daeff09b7c9523cc0b1b8bd39ebfc374b65f4e996eb16cf7190",  # as served uncompressed
    "cmu_mocap/train/soccer/soccer_5.txt": "491d3dce18ceb63e04c04e03f25fd6da578777810e7388ca699758fbf1465102",  # as served uncompressed
    "cmu_mocap/train/walking/walking_1.txt": "594fd1ec95dd385dfaa04e4230ebc047b4917ecc0615629a6a92f11d7dd3ca49",  # as served uncompressed
    "cmu_mocap/train/walking/walking_2.txt": "9f00af52c9361f16df6820846141e282b4d4958edae4952c486f141da8ff7f92",  # as served uncompressed
    "cmu_mocap/train/walking/walking_3.txt": "f5ff48a358d4de2eb95a10d69d0a7195bfb4da51ee6203aab3bf842bac352d03",  # as served uncompressed
    "cmu_mocap/train/walking/walking_4.txt": "608910282c0ad1cbeef718cdd835481a703557146524b68eefbb5ec792544e61",  # as served uncompressed
    "cmu_mocap/train/walking/walking_5.txt": "a955054b2a4fd3207f2feac395c0e51e3468daff2b5d25eb6d5fd7e584b44efe",  # as served uncompressed
}


class DataError(FileNotFoundError):
    """A data file is missing, unreadable or corrupt; the message says what to do."""


def data_dir(path=None) -> Path:
    """The data directory: ``path``, else $LYABOOK_DATA_DIR, else ~/.cache/lyabook."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("LYABOOK_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lyabook"


def _checked_root(root) -> Path:
    """data_dir(root), or a DataError when it (or a folder above it) is a file, not a folder."""
    path = data_dir(root)
    if root is not None:
        name = f"the data directory {path}"
    elif os.environ.get("LYABOOK_DATA_DIR"):
        name = f"LYABOOK_DATA_DIR={os.environ['LYABOOK_DATA_DIR']}"
    else:
        name = f"the default data directory {path}"
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "names a file" if p == path else f"lies under {p}, which is a file"
                raise DataError(f"{name} {where}, not a folder: point it at a folder that holds "
                                f"(or will hold) the data files")
            break
    return path


@contextmanager
def _reading(path: Path):
    """Turn an OSError while reading ``path`` (e.g. PermissionError) into a DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except OSError as e:
        what = "fix its permissions" if isinstance(e, PermissionError) else "it may be damaged"
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e.strerror or e}): "
                        f"{what}, or delete it to download again") from e


def _positive(name: str, value) -> None:
    if not value >= 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_url(rel: str) -> str | None:
    if rel in _SOURCES:
        return _SOURCES[rel]
    for prefix, base in _SOURCES.items():
        if prefix.endswith("/") and rel.startswith(prefix):
            return base + rel[len(prefix):]
    return None


_PART_MAX_AGE_S = 3600.0  # a .part file not written to for this long belongs to no live download


def _part_owner() -> str:
    """This process's mark in its .part file names: pid and host (no dots)."""
    return f"{os.getpid()}-" + re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _remove_stale_parts(dest: Path) -> None:
    """Remove .part files of ``dest`` left by downloads that were killed (SIGKILL, SIGTERM,
    power loss: no ``finally`` ran): those whose process on this host is gone, and any not
    written to for an hour (other hosts, older names). Live downloads of other processes stay."""
    host = _part_owner().split("-", 1)[1]
    for part in dest.parent.glob(_glob_escape(dest.name) + ".*.part"):
        owner = part.name[len(dest.name) + 1 : -len(".part")].rsplit(".", 1)[0]
        pid, _, part_host = owner.partition("-")
        stale = False
        if pid.isdigit() and part_host == host:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                stale = True
            except OSError:  # exists, owned by another user
                pass
        try:
            stale = stale or time.time() - part.stat().st_mtime > _PART_MAX_AGE_S
            if stale:
                part.unlink()
        except FileNotFoundError:
            pass


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _download(url: str, dest: Path, expected: str | None, timeout: float = 60.0) -> None:
    """Download to a temporary ``.part`` file in dest's folder, verify, then rename (atomic).
    The ``.part`` file is removed whatever happens (errors, KeyboardInterrupt); those of killed
    earlier downloads are removed first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest)
    fd, tmp = tempfile.mkstemp(prefix=f"{dest.name}.{_part_owner()}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        if expected is not None and _sha256(Path(tmp)) != expected:
            raise DataError(f"download of {url} does not match its published sha256; nothing was saved")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(rel: str, root=None, download: bool = True, checksums: dict | None = None) -> Path:
    """Path of the verified data file ``rel`` (e.g. "mnist/t10k-labels-idx1-ubyte.gz").

    Looks in the data directory; downloads from the public source when missing and allowed.
    Raises `DataError` naming the file and where to put it.
    """
    checksums = _SHA256 if checksums is None else checksums
    root = _checked_root(root)
    path = root / rel
    expected = checksums.get(rel)
    with _reading(path):
        present = path.is_file()
    if not present:
        url = _source_url(rel)
        if download and url is not None:
            try:
                _download(url, path, expected)
            except DataError:
                raise
            except Exception as e:  # no network, HTTP error, ...
                raise DataError(
                    f"{rel} is not in {root} and could not be downloaded from {url} ({type(e).__name__}: {e}); "
                    f"put the file at {path} or set LYABOOK_DATA_DIR"
                ) from None
        else:
            where = f" (public source: {url})" if url else ""
            raise DataError(f"{rel} is not in {root}: put the file at {path} or set LYABOOK_DATA_DIR{where}")
    with _reading(path):  # reads the file either way, so an unreadable one is a DataError here
        if expected is None:
            open(path, "rb").close()
            return path
        actual = _sha256(path)
    if actual != expected:
        raise DataError(f"{path} does not match its published sha256 {expected[:12]}...: the file is corrupt or a different version; delete it to download again")
    return path


# --------------------------------------------------------------------------- text
@dataclass
class CharCorpus:
    """A character corpus split 80/10/10: ``train``, ``valid``, ``test`` are int64 tensors of
    character indices into ``vocab`` (sorted characters)."""

    vocab: list
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _char_corpus(text: str, source: str) -> CharCorpus:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    n = len(ids)
    a, b = int(0.8 * n), int(0.9 * n)
    return CharCorpus(vocab, ids[:a], ids[a:b], ids[b:], source)


def load_war_and_peace(root=None, download: bool = True) -> CharCorpus:
    """The char-rnn War and Peace (82 characters): BOM stripped, CR line ends made \\n, 80/10/10."""
    path = fetch("war_and_peace/warpeace_input.txt", root, download)
    with _reading(path):
        raw = path.read_bytes()
    return _char_corpus(raw.decode("utf-8-sig"), f"War and Peace ({path})")


def fallback_text() -> CharCorpus:
    """English text that ships with CPython (pydoc_data.topics), for the smoke profile only."""
    from pydoc_data.topics import topics

    return _char_corpus("\n".join(topics[k] for k in sorted(topics)), "CPython pydoc_data.topics (smoke fallback)")


def char_batches(ids: torch.Tensor, batch_size: int = 100, seq_len: int = 100):
    """(inputs, targets), each (n_batches, batch_size, seq_len): consecutive non-overlapping
    sequences, targets shifted by one character. Raises when the text is too short."""
    _positive("batch_size", batch_size)
    _positive("seq_len", seq_len)
    per_batch = batch_size * seq_len
    n = (len(ids) - 1) // per_batch
    if n < 1:
        raise ValueError(f"text of {len(ids)} characters is shorter than one batch of {batch_size} x {seq_len} (+1)")
    x = ids[: n * per_batch].reshape(n, batch_size, seq_len)
    y = ids[1 : n * per_batch + 1].reshape(n, batch_size, seq_len)
    return x, y


# --------------------------------------------------------------------------- mocap
def _read_mocap(rel: str, root, download: bool) -> np.ndarray:
    root_path = data_dir(root)
    if (root_path / (rel + ".gz")).is_file():
        path = fetch(rel + ".gz", root, download=False)
        with _reading(path), gzip.open(path, "rt") as f:
            return np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    path = fetch(rel, root, download)
    with _reading(path):
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)


def load_cmu_mocap(root=None, download: bool = True, n_features: int = 20, min_std: float = 1e-4):
    """CMU motion capture (basketball, soccer, walking, jumping), dissertation preprocessing:
    drop dimensions with std < ``min_std`` (over the training frames), divide by the std, keep
    the first ``n_features``. Returns ``{"train": [arrays (frames, n_features)], "test": [...]}``
    (one array per recording)."""
    _positive("n_features", n_features)
    splits = {"train": range(1, 6), "test": range(1, 2)}
    raw = {s: [_read_mocap(f"cmu_mocap/{s}/{c}/{c}_{i}.txt", root, download) for c in MOCAP_CATEGORIES for i in idx]
           for s, idx in splits.items()}
    train_all = np.concatenate(raw["train"])
    std = train_all.std(0)
    keep = np.nonzero(std >= min_std)[0][:n_features]
    return {s: [(r[:, keep] / std[keep]).astype(np.float32) for r in recs] for s, recs in raw.items()}


def mocap_windows(recordings, history: int = 25, train_fraction: float = 0.8, seed: int = 0):
    """Windows predicting frame t from the preceding ``history`` frames, split 80/20 at random:
    ((x_train (n, history, f), y_train (n, f)), (x_valid, y_valid)) as float32 tensors."""
    _positive("history", history)
    xs, ys = [], []
    for r in recordings:
        if len(r) <= history:
            continue
        idx = np.arange(history, len(r))
        xs.append(np.stack([r[i - history : i] for i in idx]))
        ys.append(r[idx])
    if not xs:
        raise ValueError(f"no recording is longer than history = {history} frames")
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(train_fraction * len(x))
    tr, va = perm[:n_train], perm[n_train:]
    return (x[tr], y[tr]), (x[va], y[va])


# --------------------------------------------------------------------------- MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with _reading(path), opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise DataError(f"{path} is not an IDX file (too short)")
    magic, = struct.unpack(">I", data[:4])
    if magic not in (2049, 2051):
        raise DataError(f"{path} is not an MNIST IDX file (magic {magic}, expected 2049 labels or 2051 images)")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {arr.size} values")
    return arr.reshape(dims)


def load_mnist(root=None, download: bool = True):
    """MNIST with the standard splits: {"train": (images uint8 (60000, 28, 28), labels), "test": (...)}."""
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        images = _read_idx(fetch(f"mnist/{stem}-images-idx3-ubyte.gz", root, download))
        labels = _read_idx(fetch(f"mnist/{stem}-labels-idx1-ubyte.gz", root, download))
        if len(images) != len(labels):
            raise DataError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
        out[split] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return out


def fallback_digits():
    """scikit-learn's bundled 8x8 digits as {"train", "test"} uint8 images (0-255) and labels,
    for the smoke profile only (not MNIST)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
    labels = torch.from_numpy(d.target.astype(np.int64))
    n = int(0.8 * len(labels))
    return {"train": (images[:n], labels[:n]), "test": (images[n:], labels[n:])}


# --------------------------------------------------------------------------- tasks
MNIST_PERMUTATION_SEED = 0  # the permuted task's one fixed permutation of the 784 pixels


def mnist_sequences(images: torch.Tensor, order: str = "row", permutation_seed: int = MNIST_PERMUTATION_SEED,
                    permutation=None) -> torch.Tensor:
    """Sequential MNIST inputs from uint8 images (N, 28, 28), pixels scaled to [0, 1] (the
    authors' ``ToTensor()``, no normalisation):

    * ``order="row"``: (N, 28, 28), one row of 28 pixels per step (the dissertation's Chapter 3);
    * ``order="permuted"``: (N, 784, 1), one pixel per step in a fixed order drawn from
      ``permutation_seed`` (the permuted pixel-wise task of Chapter 4), or in the order
      ``permutation`` (the H*W pixel indices, step t shows pixel ``permutation[t]``) if given.
    """
    from .lyapunov import _as_int

    if not torch.is_tensor(images) or images.ndim != 3:
        raise ValueError(f"images must be a tensor (N, height, width), got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if images.dtype != torch.uint8:  # float images already in [0, 1] would be divided by 255 again
        raise TypeError(f"images must be uint8 (pixel values 0-255, as load_mnist returns them), got {images.dtype}")
    if len(images) < 1:
        raise ValueError(f"images must hold at least one image, got {tuple(images.shape)}")
    permutation_seed = _as_int("permutation_seed", permutation_seed, 0)
    x = images.to(torch.float32) / 255.0
    if order == "row":
        return x
    if order == "permuted":
        flat = x.flatten(1)
        if permutation is None:
            perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(permutation_seed))
        else:
            perm = check_permutation(permutation, flat.shape[1])
        return flat[:, perm].unsqueeze(-1)
    raise ValueError(f"order must be 'row' or 'permuted', got {order!r}")


def check_permutation(permutation, n_pixels: int) -> torch.Tensor:
    """``permutation`` as a tensor, or a ValueError unless it holds each of the ``n_pixels`` pixel
    indices once (integers)."""
    perm = torch.as_tensor(permutation)
    if perm.dtype not in (torch.int32, torch.int64) or not torch.equal(perm.sort().values, torch.arange(n_pixels)):
        raise ValueError(f"permutation must hold each of the {n_pixels} pixel indices once (integers), "
                         f"got {perm.dtype} of shape {tuple(perm.shape)}")
    return perm


def _check_data(name: str, t, min_ndim: int, what: str) -> None:
    """A TypeError unless ``t`` is a tensor of at least ``min_ndim`` dimensions (``what`` says the
    expected form); a ValueError if it is floating point and holds NaN or inf."""
    if not torch.is_tensor(t) or t.ndim < min_ndim:
        raise TypeError(f"{name} must be {what}, got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or inf values")


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle_seed: int | None = None, drop_last: bool = False):
    """List of (x, y) batches of ``batch_size`` along dim 0, in a fixed order (shuffled once by
    ``shuffle_seed`` if given: the same order every epoch, so a record's identity covers it)."""
    from .lyapunov import _as_int

    batch_size = _as_int("batch_size", batch_size, 1)
    for name, t in (("x", x), ("y", y)):
        _check_data(name, t, 1, "a tensor with the items along dim 0")
    if shuffle_seed is not None:
        shuffle_seed = _as_int("shuffle_seed", shuffle_seed, 0)
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be True or False, got {drop_last!r}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} items but y has {len(y)}")
    idx = torch.arange(len(x)) if shuffle_seed is None else torch.randperm(len(x), generator=torch.Generator().manual_seed(shuffle_seed))
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    out = [(x[idx[i : i + batch_size]], y[idx[i : i + batch_size]]) for i in range(0, stop, batch_size)]
    if not out:
        raise ValueError(f"{len(x)} items make no batch of {batch_size}")
    return out


class NetworkBatches:
    """Batches where every network sees its own random subset of the data: item k is
    (x (P, B, ...), y (P, B, ...)), network i's k-th batch of its subset.

    ``x``, ``y``: the shared batches, (n_batches, B, ...). Network i keeps ``round(fraction *
    n_batches)`` (at least 1) of them, drawn without replacement by its own generator (seed, i)
    and kept in their original order, so network i's subset does not depend on the others.
    The authors' CharRNN code keeps 20 % of the batches per network (``keep_amt = 0.2``); the
    dissertation's text says 30 % (spec section 7)."""

    per_network = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_networks: int, fraction: float, seed: int = 0,
                 first_network: int = 0):
        import numbers

        from .lyapunov import _as_int

        n_networks = _as_int("n_networks", n_networks, 1)
        seed, first_network = _as_int("seed", seed, 0), _as_int("first_network", first_network, 0)
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise TypeError(f"fraction must be a number in (0, 1], got {type(fraction).__name__} {fraction!r}")
        if not 0 < float(fraction) <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        for name, t in (("x", x), ("y", y)):
            _check_data(name, t, 2, "a tensor of stacked batches (n_batches, B, ...)")
        if len(x) != len(y) or len(x) < 1:
            raise ValueError(f"x and y must hold the same number (>= 1) of batches, got {len(x)} and {len(y)}")
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"x and y must have the same batch size (dim 1), got {tuple(x.shape)} and {tuple(y.shape)}")
        self.x, self.y, self.fraction, self.seed = x, y, float(fraction), seed
        k = max(1, round(self.fraction * len(x)))
        self.index = torch.stack([
            torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + first_network + i))[:k].sort().values
            for i in range(n_networks)])  # (P, k)

    def __len__(self) -> int:
        return self.index.shape[1]

    def __getitem__(self, k: int):
        if isinstance(k, bool) or not hasattr(k, "__index__"):
            raise TypeError(f"batch index must be an integer, got {type(k).__name__} {k!r}")
        k = k.__index__()
        if not -len(self) <= k < len(self):
            raise IndexError(f"batch {k} of {len(self)} (each network's subset has {len(self)} batches)")
        j = self.index[:, k]
        return self.x[j], self.y[j]

    def select(self, networks: range) -> "NetworkBatches":
        """The batches of networks ``networks`` (consecutive): a shard's."""
        P = self.index.shape[0]
        if (not isinstance(networks, range) or networks.step != 1 or len(networks) == 0
                or networks.start < 0 or networks.stop > P):
            raise ValueError(f"networks must be a range of consecutive networks within the {P}, got {networks!r}")
        sub = NetworkBatches.__new__(NetworkBatches)
        sub.x, sub.y, sub.fraction, sub.seed = self.x, self.y, self.fraction, self.seed
        sub.index = self.index[networks.start : networks.stop]
        return sub

    def identity_tensors(self):
        """What a run's identity hashes: the shared data and every network's selection."""
        return [self.x, self.y, self.index]
