"""Progress bars on the terminal that never land in a notebook's outputs.

``lyabook run`` executes notebooks in a Jupyter kernel whose ``sys.stdout`` and
``sys.stderr`` are recorded into the notebook. The kernel process inherits the terminal of
the ``lyabook run`` that started it, so a bar written to that terminal shows progress there
and is never stored. ipykernel (>= 6) also redirects the process's file descriptor 2 into the
notebook (to catch C-level output), so ``sys.__stderr__`` is not enough: the terminal is the
descriptor that ``sys.stderr.fileno()`` reports (ipykernel's copy of the original fd 2), or
``sys.__stderr__`` outside a kernel.

    from lyabook.progress import bar
    for epoch in bar(range(epochs), desc="epochs", progress=progress):
        ...
"""
from __future__ import annotations

import io
import os
import sys

__all__ = ["bar", "terminal"]

_streams: dict[int, io.TextIOBase] = {}


def _fileno(stream) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def terminal():
    """A text stream on the process's real standard error (the terminal), or None if there
    is none. Inside a Jupyter kernel this is the terminal that started the kernel; nothing
    written to it reaches the notebook."""
    fd = _fileno(sys.stderr)
    if fd is None:
        fd = _fileno(sys.__stderr__) if sys.__stderr__ is not None else None
    if fd is None:
        return None
    stream = _streams.get(fd)
    if stream is None or stream.closed:
        try:
            os.fstat(fd)
        except OSError:
            return None
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                  errors="replace", line_buffering=False, write_through=True)
        _streams[fd] = stream
    return stream


def bar(iterable=None, total: int | None = None, desc: str | None = None, progress: bool = True, **kwargs):
    """A tqdm bar on the terminal (see `terminal`); disabled (a plain pass-through, no output)
    when ``progress`` is False or there is no terminal. Use as an iterable wrapper or, with
    ``total``, as a context manager with ``update(n)``. Extra keyword arguments go to tqdm."""
    from tqdm.std import tqdm  # the text bar: tqdm.auto would draw a widget into the notebook

    file = terminal() if progress else None
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, file=file, disable=file is None, **kwargs)
