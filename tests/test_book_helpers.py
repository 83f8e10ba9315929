"""The book's helpers: verdicts of claims, display tables and the plotting style."""
import math

import matplotlib

matplotlib.use("Agg")
import pytest

from lyabook.claims import Claim, check, check_correlation, claims_table, verdicts
from lyabook.plotting import DPI, MAX_COLUMNS, WIDTH_IN, exponent_label, panels
from lyabook.tables import provenance_table, table


def test_a_claim_that_does_not_hold_must_say_why():
    with pytest.raises(ValueError, match="needs a reason"):
        Claim("c", "criterion", "1.0", "differs")
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("c", "criterion", "1.0", "maybe")


def test_check_gives_holds_differs_or_not_resolved_from_the_criterion():
    assert check("c", "x > 0", "x = 1", True).verdict == "holds"
    d = check("c", "x > 0", "x = -1", False, differs="negative")
    assert (d.verdict, d.reason, d.measured) == ("differs", "negative", "x = -1")
    assert check("c", "x > 0", "x = 1", True, unresolved="too few steps").verdict == "not resolved"
    with pytest.raises(TypeError, match="bool"):
        check("c", "x > 0", "x = 1", 1.0)


@pytest.mark.parametrize("ci, sign, verdict", [
    ((-0.8, -0.9, -0.6), -1, "holds"),
    ((0.8, 0.6, 0.9), -1, "differs"),
    ((-0.2, -0.6, 0.3), -1, "not resolved"),
    ((0.5, 0.2, 0.7), 1, "holds"),
    ((math.nan, math.nan, math.nan), 1, "not resolved"),
])
def test_a_correlation_claim_is_judged_on_the_side_of_its_confidence_interval(ci, sign, verdict):
    c = check_correlation("claim", *ci, sign=sign, n=20)
    assert c.verdict == verdict
    assert "20 networks" in c.measured


def test_claims_table_has_one_row_per_claim_with_criterion_and_verdict():
    df = claims_table([check("a", "x > 0", "1", True), check("b", "x > 0", "-1", False)])
    assert list(df.columns) == ["criterion", "measured", "verdict", "reason"]
    assert list(df["verdict"]) == ["holds", "differs"]


def test_verdicts_are_rows_of_claim_and_verdict_without_the_measured_value():
    rows = verdicts([check("a > 0", "x > 0", "x = 0.2316", True), check("b < 0", "x < 0", "x = 0.7", False)])
    assert rows == [{"check": "a > 0", "result": "holds"}, {"check": "b < 0", "result": "differs"}]
    assert list(table(rows, "check")["result"]) == ["holds", "differs"]


def test_tables_round_floats_to_significant_digits_as_text():
    df = table([{"name": "a", "value": 3.14159265, "none": None}], "name", digits=3)
    assert df.loc["a", "value"] == "3.14" and df.loc["a", "none"] == ""
    assert "3.14159" not in df.to_html()


def test_provenance_table_puts_the_run_beside_the_rendering():
    df = provenance_table({"device_name": "cpu", "git_commit": "0123456789abcdef", "git_dirty": False,
                           "lyabook": "0.1.1.dev3+gfedcba9.d20261127"},
                          run={"device": "H100", "git commit": "fedcba"})
    assert list(df.columns) == ["the run that produced the numbers", "this rendering"]
    assert df.loc["device", "the run that produced the numbers"] == "H100"
    assert df.loc["git commit", "this rendering"] == "0123456789ab"
    assert df.loc["lyabook", "this rendering"] == "0.1.1.dev3"  # not the stale commit of an editable install


def test_figures_fit_the_text_column_with_at_most_three_panels_a_row():
    fig, axes = panels(5)
    assert len(axes) == 5 and len(fig.axes) == 5
    assert fig.get_size_inches()[0] == WIDTH_IN and WIDTH_IN * DPI <= 800
    assert max(ax.get_subplotspec().colspan.stop for ax in axes) <= MAX_COLUMNS
    with pytest.raises(ValueError, match="ncols"):
        panels(4, ncols=4)


def test_exponent_labels_name_the_unit():
    assert exponent_label("step") == r"$\lambda_i$ (per step)"
    assert exponent_label("unit time", r"\lambda_1") == r"$\lambda_1$ (per unit time)"
    with pytest.raises(ValueError, match="unit"):
        exponent_label("second")


def test_book_style_shows_table_cells_in_full():
    import pandas as pd

    from lyabook.plotting import use_book_style

    use_book_style()
    long = "a criterion that is longer than fifty characters and must not be cut short"
    assert long in pd.DataFrame({"criterion": [long]})._repr_html_()


def test_a_runs_records_give_one_provenance_labelled_like_the_renderings():
    from lyabook.results import records_provenance

    old = {"device": "NVIDIA H100", "torch": "2.11"}                      # records before the one writer
    new = {"device": "NVIDIA H100", "device_name": "NVIDIA H100", "torch": "2.11", "git_commit": "a" * 40,
           "lyabook": "0.2.dev1+gaaaa", "date": "2026-11-25T10:00:00+00:00"}
    run = records_provenance([old, new, {**new, "date": "2026-11-26T09:00:00+00:00"}])
    assert run == {"device_name": "NVIDIA H100", "torch": "2.11", "lyabook": "0.2.dev1+gaaaa", "git_commit": "a" * 40,
                   "date": "2026-11-25T10:00:00+00:00 to 2026-11-26T09:00:00+00:00"}
    df = provenance_table({"device_name": "cpu", "torch": "2.13"}, run={**run, "epochs recorded": "3"})
    col = df["the run that produced the numbers"]
    assert col["device"] == "NVIDIA H100" and col["git commit"] == "a" * 12 and col["lyabook"] == "0.2.dev1"
    assert col["epochs recorded"] == "3" and df.loc["device", "this rendering"] == "cpu"


def test_hover_scatter_has_one_labelled_point_each_and_names_bad_input():
    import re
    import xml.etree.ElementTree as ET

    from lyabook.plotting import hover_scatter

    html = hover_scatter([0.0, 1.0, 2.0], [1.0, -1.0, 0.5], ["#ff0000", "#00ff00", "#0000ff"],
                         ["LSTM, p 0.5 <best>", "GRU & co", "RNN"], title="t", xlabel="x", ylabel="y",
                         legend={"LSTM": "#ff0000", "GRU & co": "#00ff00"})
    assert "GRU &amp; co" in html.split("</svg>")[1]  # the legend, escaped
    svg = ET.fromstring(re.search(r"<svg.*</svg>", html, re.S).group(0))  # well-formed: labels escaped
    ns = "{http://www.w3.org/2000/svg}"
    circles = svg.findall(f".//{ns}circle")
    assert [c.find(f"{ns}title").text for c in circles] == ["LSTM, p 0.5 <best>", "GRU & co", "RNN"]
    cx = [float(c.get("cx")) for c in circles]
    cy = [float(c.get("cy")) for c in circles]
    assert cx[0] < cx[1] < cx[2] and cy[0] < cy[2] < cy[1]  # x grows rightwards, y upwards
    with pytest.raises(ValueError, match="labels must have one entry per point"):
        hover_scatter([0.0, 1.0], [0.0, 1.0], ["red", "red"], ["a"])
    with pytest.raises(ValueError, match="finite"):
        hover_scatter([0.0, float("nan")], [0.0, 1.0], ["red", "red"], ["a", "b"])
