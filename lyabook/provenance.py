"""Provenance of a run and the result files that carry it.

Every notebook ends with `provenance(...)` (profile, device, code version, versions, date, wall
time) and saves its numbers with `save_results`, a JSON file whose ``provenance`` entry says how
they were made. The implementation, the file format, the encoding of NaN and infinity and the
manifest of committed results are in `lyabook.results` (its docstring documents them); this
module keeps the notebooks' imports working. ``python -m lyabook.provenance manifest|check [DIR]``
is the same as ``python -m lyabook.results ...``.
"""
from __future__ import annotations

from .results import (MANIFEST_NAME, MissingResultsError, ResultsError, check_manifest, code_version, load_results,
                      provenance, resolve_device, save_results, write_manifest)

__all__ = ["provenance", "save_results", "load_results", "resolve_device", "code_version", "ResultsError",
           "MissingResultsError", "write_manifest", "check_manifest", "MANIFEST_NAME"]

if __name__ == "__main__":
    import sys

    from .results import main

    sys.exit(main())
