"""Claims of the dissertation next to what a chapter measured, each with its verdict.

Every claim states a criterion that the opposite result would fail, and gets one of three
verdicts: ``holds`` (the criterion is met), ``differs`` (it is not; the measured value says by
how much) or ``not resolved`` (this run cannot decide; the reason says why, e.g. too few
networks for the confidence interval to exclude zero). `claims_table` shows them as one
HTML table (see `lyabook.tables`), `Claim.to_dict` saves them with the chapter's results.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["VERDICTS", "Claim", "check", "check_correlation", "claims_table", "verdicts"]

VERDICTS = ("holds", "differs", "not resolved")


@dataclass(frozen=True)
class Claim:
    """One claim: ``claim`` (the dissertation's statement, with its figure or table), ``criterion``
    (the test applied), ``measured`` (the value found), ``verdict`` (one of `VERDICTS`) and
    ``reason`` (required unless the claim holds)."""

    claim: str
    criterion: str
    measured: str
    verdict: str
    reason: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict != "holds" and not self.reason.strip():
            raise ValueError(f"a claim that {self.verdict!r} needs a reason: {self.claim!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def check(claim: str, criterion: str, measured: str, passed, *, unresolved: str | None = None,
          differs: str = "") -> Claim:
    """A claim from the outcome of its criterion.

    ``passed``: the criterion's outcome (bool). ``unresolved``: the reason this run cannot decide
    (then the verdict is ``not resolved`` whatever ``passed`` says). ``differs``: what the
    difference means, shown when the criterion fails (the measured value is always shown).
    """
    if unresolved:
        return Claim(claim, criterion, measured, "not resolved", unresolved)
    if not isinstance(passed, bool):
        raise TypeError(f"passed must be a bool (the criterion's outcome), got {type(passed).__name__}: {claim!r}")
    if passed:
        return Claim(claim, criterion, measured, "holds")
    return Claim(claim, criterion, measured, "differs", differs or "the criterion fails at the measured value")


def claims_table(claims):
    """The claims as a DataFrame (claim, criterion, measured, verdict, reason) for display."""
    import pandas as pd

    return pd.DataFrame([c.to_dict() for c in claims]).set_index("claim")


def verdicts(claims) -> list[dict]:
    """The claims as rows ``{"check": claim, "result": verdict}``, without the measured values,
    for `lyabook.tables.table` (with rows of other checks after them).

    For the cell a notebook's nbval regression compares: a value measured along a chaotic
    trajectory changes with the CPU's rounding (another BLAS kernel moves it by about its standard
    error), a verdict whose criterion is set well away from the value does not.
    """
    return [{"check": c.claim, "result": c.verdict} for c in claims]


def check_correlation(claim: str, r, low, high, *, sign: int, n: int, what: str = "Pearson r") -> Claim:
    """A claim that two quantities correlate with the given ``sign`` (-1 or +1), judged on the 95 %
    confidence interval [low, high] of the correlation over ``n`` networks: ``holds`` when the
    interval excludes 0 on the claimed side, ``differs`` when it excludes 0 on the other side,
    ``not resolved`` when it includes 0."""
    if sign not in (-1, 1):
        raise ValueError(f"sign must be -1 or +1, got {sign!r}")
    side = "below" if sign < 0 else "above"
    criterion = f"95 % CI of {what} lies {side} 0"
    measured = f"r = {r:.2f}, 95 % CI [{low:.2f}, {high:.2f}], {n} networks"
    if not all(map(_finite, (r, low, high))):
        return Claim(claim, criterion, measured, "not resolved", "the correlation is undefined (no data or no spread)")
    if low <= 0 <= high:
        return Claim(claim, criterion, measured, "not resolved", f"the 95 % CI includes 0 with {n} networks")
    if (high < 0) == (sign < 0):
        return Claim(claim, criterion, measured, "holds")
    return Claim(claim, criterion, measured, "differs", "the correlation has the opposite sign")


def _finite(v) -> bool:
    import math

    return v is not None and math.isfinite(float(v))
