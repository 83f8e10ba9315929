"""Tables as the book shows them: HTML (pandas), numbers rounded as text, never wider than the page.

`table` turns rows of numbers into a display-ready DataFrame; `provenance_table` shows how a result
was made (from `lyabook.provenance.provenance`): the run that produced the numbers and, when the
page only re-renders saved records, the rendering beside it.
"""
from __future__ import annotations

__all__ = ["table", "provenance_table"]

# what a reader needs to know of a run, in this order (other provenance keys stay in the result files)
PROVENANCE_ROWS = {"device_name": "device", "torch": "torch", "lyabook": "lyabook", "git_commit": "git commit",
                   "source_sha256": "source sha256", "date": "date (UTC)", "wall_time_s": "wall time (s)",
                   "profile": "profile", "host": "host"}


def table(rows, index: str | None = None, *, digits: int = 3):
    """A pandas DataFrame from a list of dicts for display as an HTML table: floats are written
    with ``digits`` significant digits (as text, so every cell shows exactly that), None as blank."""
    import numpy as np
    import pandas as pd

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.{digits}g}"
        return v

    df = pd.DataFrame([{k: fmt(v) for k, v in r.items()} for r in rows])
    return df.set_index(index) if index else df



def provenance_table(prov: dict, run: dict | None = None):
    """A DataFrame of the provenance ``prov`` (one column), or of ``run`` (the run that produced the
    numbers, e.g. `lyabook.results.records_provenance` of its records, plus any rows of its own)
    beside ``prov`` (this rendering)."""
    import pandas as pd

    def rows(p):
        out = {label: p.get(key) for key, label in PROVENANCE_ROWS.items() if p.get(key) is not None}
        short = lambda v, n: ", ".join(part[:n] for part in str(v).split(", "))  # noqa: E731 (several records: a list)
        if p.get("git_commit"):
            out["git commit"] = short(p["git_commit"], 12) + (" (with uncommitted changes)" if p.get("git_dirty") else "")
        if p.get("git_commit") and p.get("lyabook"):
            # an editable install's version names the commit it was installed at; the commit row is the code
            out["lyabook"] = ", ".join(sorted({part.split("+")[0] for part in str(p["lyabook"]).split(", ")}))
        if p.get("source_sha256"):
            out["source sha256"] = short(p["source_sha256"], 16)
        return {k: str(v) for k, v in out.items()}

    if run is None:
        return pd.DataFrame({"provenance": rows(prov)})
    this = rows(prov)
    # the run's provenance keys get the same labels; anything else it holds is shown as given
    run = {**rows(run), **{k: v for k, v in run.items() if k not in PROVENANCE_ROWS and k != "git_dirty"}}
    keys = list(dict.fromkeys(list(run) + list(this)))
    return pd.DataFrame({"the run that produced the numbers": [str(run.get(k, "not recorded")) for k in keys],
                         "this rendering": [this.get(k, "") for k in keys]}, index=keys)
