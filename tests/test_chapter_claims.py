"""Claims of the chapters, checked on the results their full-profile runs saved
(notebooks/results/*.json), not on the printed text."""
from pathlib import Path

import numpy as np
import pytest

from lyabook.claims import VERDICTS
from lyabook.results import load_results

RESULTS = Path(__file__).resolve().parent.parent / "notebooks" / "results"


def _load(name):
    return load_results(RESULTS / f"{name}.json")["results"]


def _verdicts(results):
    """{claim: verdict} of a chapter's saved claims; every claim has a criterion, and a reason
    unless it holds."""
    out = {}
    for c in results["claims"]:
        assert c["verdict"] in VERDICTS and c["criterion"].strip(), c
        assert c["verdict"] == "holds" or c["reason"].strip(), c
        out[c["claim"]] = c["verdict"]
    return out


@pytest.fixture(scope="module")
def lorenz():
    return _load("01_lorenz")


@pytest.fixture(scope="module")
def vanilla():
    return _load("02_vanilla_rnn")


@pytest.mark.parametrize("rho", ["28.0", "16.0", "5.0"])
def test_lorenz_converged_spectra_match_the_reference_table(lorenz, rho):
    conv = lorenz["spectra"][rho]["converged"]
    for got, se, want in zip(conv["exponents"], conv["stderr"], lorenz["reference"][rho]):
        assert abs(got - want) < 0.01 + 3 * se


def test_lorenz_exponents_sum_to_the_trace_for_every_rho(lorenz):
    for rho, s in lorenz["spectra"].items():
        for run in s.values():
            assert abs(sum(run["exponents"]) - lorenz["trace"]) < 1e-3, rho


def test_lorenz_kaplan_yorke_dimension_at_rho_28(lorenz):
    assert abs(lorenz["kaplan_yorke_dimension_rho28"] - 2.062) < 0.01


def test_lorenz_fixed_point_regimes_have_all_negative_exponents(lorenz):
    """The dissertation's positive lambda_1 at rho = 16 and 5 are not the system's."""
    for rho in ("16.0", "5.0"):
        assert max(lorenz["spectra"][rho]["converged"]["exponents"]) < 0
        assert max(lorenz["spectra"][rho]["dissertation_setting"]["exponents"]) < 0


def test_lorenz_rho_28_is_chaotic_with_one_zero_exponent(lorenz):
    e = lorenz["spectra"]["28.0"]["converged"]["exponents"]
    assert e[0] > 0.85 and abs(e[1]) < 0.01 and e[2] < -14


def test_vanilla_stable_and_chaotic_regimes_have_the_dissertations_signs(vanilla):
    reg = vanilla["regimes"]
    for name, sign in (("stable", -1), ("chaotic", 1)):
        lam, se = reg[name]["exponents"][0], reg[name]["stderr"][0]
        assert sign * lam > 3 * se, name


def test_vanilla_marginal_regime_is_the_closest_to_zero(vanilla):
    lam = {n: abs(r["exponents"][0]) for n, r in vanilla["regimes"].items()}
    assert lam["marginal"] < lam["stable"] and lam["marginal"] < 1.0


def test_vanilla_largest_exponent_increases_across_the_three_regimes(vanilla):
    lam = [vanilla["regimes"][n]["exponents"][0] for n in ("stable", "marginal", "chaotic")]
    assert lam == sorted(lam)


def test_t_on_leaves_the_leading_exponents_unchanged_and_flattens_the_tail(vanilla):
    t_on = vanilla["t_on"]
    base = t_on["1"]
    for t, e in t_on.items():
        assert max(abs(a - b) for a, b in zip(e[:10], base[:10])) < 1e-8, t
    largest = t_on[max(t_on, key=int)]
    assert max(abs(a - b) for a, b in zip(largest[-10:], base[-10:])) > 0.1  # the plateau


def test_more_negative_exponents_have_larger_standard_errors(vanilla):
    se = vanilla["convergence"]["stderr"]
    assert se[-1] > se[0]


def test_errata_transpose_changes_exponents_but_not_their_sum():
    ev = _load("00_errata")
    t = ev["transpose"]
    assert abs(t["lambda_max_JQ"] - t["lambda_max_JTQ"]) > 1e-3
    assert abs(t["sum_JQ"] - t["sum_JTQ"]) < 1e-8
    assert abs(ev["lstm_state"]["full_lambda_max"] - ev["lstm_state"]["h_block_lambda_max"]) > 0.1


@pytest.fixture(scope="module")
def training():
    return load_results(RESULTS / "03_training_evolution.json")


def test_training_chapter_states_its_reductions_and_devices(training):
    """A reduced run says so: the reductions it saved are exactly the parameters that differ
    from the full profile, and it names the devices that trained."""
    import yaml

    full = yaml.safe_load((RESULTS.parent / "profiles" / "full" / "03_training_evolution.yaml").read_text())
    red = training["results"]["reductions"]
    assert set(red) <= set(full)
    for k, v in red.items():
        assert v["dissertation scale"] == full[k] and v["this run"] != full[k]
    assert training["provenance"]["training_devices"]


def test_training_chapter_networks_learn_and_spectra_are_full_state(training):
    r = training["results"]
    fig26 = r["fig26"]
    vl = r["sweep"]["valid_loss"]
    assert all(last < first for first, last in zip(vl[0], vl[-1]))  # every network learned
    spectra = fig26["exponents"]  # (epochs + 1, networks, 2H)
    assert len(spectra[0]) == len(fig26["p"]) and len(spectra[0][0]) % 2 == 0
    change = max(abs(a - b) for n0, n1 in zip(spectra[0], spectra[-1]) for a, b in zip(n0, n1))
    assert change > 0.01  # the spectra move during training (Fig. 2.6)


def test_lorenz_verdicts_follow_the_measured_signs(lorenz):
    """The dissertation's positive lambda_1 at rho = 16 and 5 'differs'; rho = 28 'holds'."""
    v = _verdicts(lorenz)
    for rho in ("16", "5"):
        assert v[f"ρ = {rho}: the first exponent is positive (Fig. 1.2)"] == "differs"
    assert v["ρ = 28: the first exponent is positive (Fig. 1.2)"] == "holds"
    assert v["every sum lies within 0.16 of the trace −13.667 (Sec. 1)"] == "holds"


def test_vanilla_verdicts_follow_the_measured_exponents(vanilla):
    v = _verdicts(vanilla)
    reg = vanilla["regimes"]
    assert v["σ_V² = 1/500 is stable: λ_max < 0 (Fig. 2.3a)"] == "holds"
    assert v["σ_V² = 500 is chaotic: λ_max > 0 (Fig. 2.3c)"] == "holds"
    marginal = "holds" if abs(reg["marginal"]["exponents"][0]) < 0.05 else "differs"
    assert v["σ_V² = 100 is marginally stable: λ_max ≈ 0 (Fig. 2.3b)"] == marginal
    assert reg["stable"]["spread_over_initial_conditions"] < 1e-6 < 0.1 < reg["chaotic"]["spread_over_initial_conditions"]


def test_training_verdicts_follow_the_saved_numbers(training):
    """Each verdict is what its criterion gives on the saved numbers (no lenient thresholds)."""
    r = training["results"]
    v = _verdicts(r)
    slope = r["fig26"]["slope"]
    assert v["spectra converge like 1/epoch (Fig. 2.6d)"] == ("holds" if -1.5 <= slope <= -0.5 else "differs")
    frac = r["table1"]["spectrum / training"]
    assert v["a spectrum costs about 4 % of the training time (paper Table 1)"] == (
        "holds" if all(0.02 <= float(f) <= 0.06 for f in frac) else "differs")
    for key, claim, sign in (("r_loss", "larger λ_max goes with lower CharRNN loss (Fig. 2.7b)", -1),
                             ("r_accuracy", "larger λ_max goes with higher CharRNN accuracy (Fig. B2)", 1)):
        _, low, high, _ = r["sweep"][key]
        expected = "not resolved" if low <= 0 <= high else ("holds" if (high < 0) == (sign < 0) else "differs")
        assert v[claim] == expected, claim


def test_training_fig26_measures_are_those_of_the_saved_spectra(training):
    """Fig. 2.6's slope and direction are what `spectrum_convergence` gives on the saved spectra,
    and the 'from below' verdict follows the count of networks (more than half: holds)."""
    from lyabook.evolution import spectrum_convergence

    fig26 = training["results"]["fig26"]
    conv = spectrum_convergence(fig26["exponents"])
    assert conv["slope"] == pytest.approx(fig26["slope"], rel=1e-9, abs=1e-12)
    assert list(conv["from_below"]) == list(fig26["from_below"])
    assert np.allclose(conv["mean_diff"], fig26["mean_diff"])
    below = sum(fig26["from_below"])
    assert _verdicts(training["results"])["the mean exponent approaches its final value from below (Fig. 2.6e)"] == (
        "holds" if below > len(fig26["p"]) / 2 else "differs")
    assert len(fig26["from_below_h_block"]) == len(fig26["p"]) and isinstance(fig26["slope_h_block"], float)


def test_mocap_claim_is_judged_without_the_exponents_rounding_sets(training):
    m = training["results"]["mocap"]
    assert len(m["mean_exponent_resolved"]) == len(m["p"])
    assert all(a >= b - 1e-9 for a, b in zip(m["mean_exponent_resolved"], m["mean_exponent"]))  # clipped at ln u
    assert abs(m["ln_u"] - (-36.7368)) < 1e-3


def test_errata_chapter3_code_variants_and_how_much_they_change_the_spectra():
    """Paired along the same trajectories: coRNN's swapped state and the target-learning Jacobian
    move lambda_max by more than 3 standard errors; ASRNN's transposed Jacobian without bias
    moves it by less than 0.01 per step (its linear part has the same spectrum either way);
    lyabook.force gives the map's spectrum; the code's SMNIST loss is the cross-entropy / 100."""
    ev = _load("00_errata")["chapter3"]
    for name in ("cornn", "target_learning"):
        assert abs(ev[name]["paired_diff"]) > 3 * ev[name]["paired_stderr"], name
    assert abs(ev["asrnn"]["paired_diff"]) < 0.01 and ev["asrnn"]["max_abs_diff"] < 0.01
    tl = ev["target_learning"]
    assert abs(tl["lambda_max"] - tl["lambda_max_force_module"]) < 1e-9
    assert ev["smnist_loss_ratio"] == pytest.approx(100)


def test_errata_asrnn_code_init_shrinks_the_recurrent_matrix_by_sqrt_n():
    """The code's ASRNN init (W std sigma / n) against the text's (sigma / sqrt n), same draws:
    the recurrent matrix's eigenvalue spread is sqrt(128) times smaller at every sigma, so the
    code's largest sigma (16) stays below the text's sigma = 2, and lambda_max of the untrained
    networks is smaller with the code's init at every sigma from 2 (the saved standard errors
    beside it)."""
    import numpy as np

    ev = _load("00_errata")["chapter3"]["asrnn_init"]
    assert ev["sigma"] == [1, 2, 4, 8, 16] and ev["hidden"] == 128
    spread_text, spread_code = np.array(ev["eig_spread_text"]), np.array(ev["eig_spread_code"])
    np.testing.assert_allclose(spread_text / spread_code, 128 ** 0.5, rtol=1e-6)
    assert spread_code[-1] < spread_text[1]
    lt, lc = np.array(ev["lambda_max_text"]), np.array(ev["lambda_max_code"])
    se = np.hypot(ev["stderr_text"], ev["stderr_code"])
    assert bool((lt[1:] - lc[1:] > 2 * se[1:]).all()), (lt, lc, se)


def test_errata_pixel_flipping_r_values_come_from_another_trajectory_and_table_41_is_a_z_test():
    """Chapter 4's pixel-flipping code (00_errata, 8): along the code's reset-every-step trajectory
    with its sech Jacobian the first FTLE moves by many standard errors and the steps ranked
    highest are mostly others; Table 4.1's "Variance" column is the z-test's standard error."""
    ev = _load("00_errata")["pixel_flipping"]
    assert abs(ev["paired_diff"]) > 5 * ev["paired_stderr"]
    assert ev["corr_log_r1"] < 0.5 and ev["top50_overlap"] < 0.5
    assert ev["table41_max_p_error_as_se"] < 0.0025
    assert abs(ev["table41_p100_as_variance"] - 0.075) < 0.001


def test_ftle_gradient_verdicts_follow_the_saved_numbers():
    """Chapter 4 (Figs. 4.1): the trained network learned, the untrained alignment sits at the
    random baseline, and each verdict is what its criterion gives on the saved statistics."""
    res = _load("04_ftle_gradients")
    assert res["valid_accuracy"][-1] > 0.5 > res["valid_accuracy"][0]
    a, base = res["alignment"], res["baseline"]
    e = str(res["settings"]["epochs"])
    code = lambda ep, q: a[ep][f"{q} / first 5"]["code_std"]
    verdicts = _verdicts(res)
    untrained = [code("0", q) for q in ("first 10", "last 10", "random 10")]
    expect = {
        "untrained: every set's alignment is at the random baseline (Fig. 4.1, top)": all(abs(v / base - 1) < 0.15 for v in untrained),
        "trained: the first ten Q vectors align more with the gradient's first singular vectors": code(e, "first 10") > 1.2 * code("0", "first 10"),
        "with the code's Q vectors (J^T Q) the first ten also align more after training":
            res["alignment_code_q"][e]["first 10 / first 5"] > 1.2 * res["alignment_code_q"]["0"]["first 10 / first 5"],
        "the dissertation's numbers come from the code's Q vectors (J^T Q)": all(
            abs(res["alignment_code_q"][ep][f"{q} / first 5"] - d[i]) < 0.01
            for q, d in {"first 10": (0.089, 0.200), "last 10": (0.089, 0.051), "random 10": (0.088, 0.067)}.items()
            for i, ep in enumerate(("0", e))),
        "with covariant vectors in place of Q vectors, the first ten still align more with the gradient after training":
            res["alignment_clv"][e]["first 10 / first 5"] > 1.2 * res["alignment_clv"]["0"]["first 10 / first 5"],
        "with covariant vectors, the last ten become more orthogonal to the gradient after training":
            res["alignment_clv"][e]["last 10 / first 5"] < 0.9 * res["alignment_clv"]["0"]["last 10 / first 5"],
        "trained: the last ten Q vectors are more orthogonal to them": code(e, "last 10") < 0.9 * code("0", "last 10"),
        "trained: ten random Q vectors are slightly more orthogonal": code(e, "random 10") < code("0", "random 10"),
        "Fig. C2: after training only the first ten Q vectors narrow their alignment with the last singular vectors":
            a[e]["first 10 / last 5"]["code_std"] < 0.9 * a["0"]["first 10 / last 5"]["code_std"]
            and all(abs(a[e][f"{q} / last 5"]["code_std"] / a["0"][f"{q} / last 5"]["code_std"] - 1) < 0.1
                    for q in ("last 10", "random 10")),
        "Fig. 4.2: after training the first Q vectors stand out and the alignment falls with the index":
            res["fig42"]["first_sv_q1_3"] > 2 * base and res["fig42"]["first_sv_q1_3"] > res["fig42"]["first_sv_q11_20"],
        "Fig. 4.2: after training the first Q vectors are more orthogonal to the last singular vectors":
            res["fig42"]["last_sv_q1_3"] < base,
    }
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim
    assert abs(base - 128 ** -0.5) < 1e-12


def test_pixel_flipping_verdicts_follow_the_saved_numbers():
    """Chapter 4 (Figs. 4.3-4.5, Table 4.1): the network learned the task, and each verdict is
    what its criterion gives on the saved loss changes, slopes and tests."""
    res = _load("05_pixel_flipping")
    assert res["test_accuracy"] > 0.5 or res["reductions"]
    ks = res["settings"]["ks"]
    dy = {k: np.asarray(v) for k, v in res["loss_change"].items()}
    diff = lambda name, ctrl, k: dy[name][ks.index(k)].mean() - dy[ctrl][ks.index(k)].mean()
    table_ks = [r["k"] for r in res["table41_paired"]]
    mid = [k for k in table_ks if 20 < k < 300]
    p = {r["k"]: r["p (paired t)"] for r in res["table41_paired"]}
    for r in res["table41_paired"]:  # the saved paired test is the one lyabook.pixelflip computes
        from lyabook.pixelflip import paired_test

        assert paired_test(dy["real"][ks.index(r["k"])], dy["random"][ks.index(r["k"])])["p_t"] == pytest.approx(r["p (paired t)"])
    slopes = {int(n): s for n, s in res["sorted_slopes"].items()}
    wrong, conf = res["wrong_new_label"], res["median_confidence"]
    expect = {
        "Fig. 4.3 (left): log r^1 fluctuates but its running mean, the first FTLE, converges":
            res["running_mean_drift"] < 0.05 * res["log_r1_spread"],
        "Fig. 4.3 (right): the sorted first R value has the steepest slope (n = 1 against larger n)": min(slopes, key=slopes.get) == 1,
        "Fig. 4.4: for 20 < k < 300 flipping by R values raises the loss more than random flips":
            bool(mid) and all(diff("real", "random", k) > 0 for k in mid),
        "the same with the code's R values and its shared random control":
            bool(mid) and all(diff("authors", "random_same", k) > 0 for k in mid),
        "Table 4.1: the printed p-values are a one-sided z-test whose 'Variance' column is the standard error":
            all(abs(r["p = Phi(-Delta / 'Variance')"] - r["printed p"]) < 0.0025 for r in res["table41_recomputed"]),
        "Table 4.1: p < 0.05 at k = 75, 100 and 200": all(k in p and p[k] < 0.05 for k in (75, 100, 200)),
        "Figs. 4.5, D3: R-value flips change the prediction to a wrong label more often than random flips":
            wrong["real"] >= 0.5 and wrong["real"] >= 2 * wrong["random"],
        "Figs. 4.5, D3: the wrong predictions after R-value flips are confident, more than after random flips":
            conf["real"] > conf["random"],
    }
    verdicts = _verdicts(res)
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim


def test_aelle_smnist_verdicts_follow_the_saved_numbers():
    """Chapter 3 (Figs. 3.9, 3.12-3.15, Tables B4, D5, 3.1-3.3): every verdict is what its
    criterion gives on the saved scores; the level set predicts its target and the null space
    the bias; Table D5's composition sums to one."""
    res = _load("06_aelle_smnist")
    b4, d5, me = res["table_b4"], res["table_d5"], res["mean_exponent"]
    assert abs(sum(d5["median"]["composition"].values()) - 1) < 1e-9
    ep = res["settings"]["pretrain_epochs"]
    t31 = {r["epoch"]: r for r in res["table_31"]}
    t32 = {r["epoch"]: r for r in res["table_32"]}
    t33 = {r["epoch"]: r for r in res["table_33"]}
    pcs = [int(k.split()[0]) for k in res["table_33"][0] if k.endswith("PCs")]
    base_names = ("LE Mean", "LE Max", "LE PCA")
    lv = res["level_set"]
    later = [e for e in ep if e > 0]
    expect = {
        "Fig. 3.12: coRNN, ASRNN, Lipschitz and Noisy RNN keep exponents near zero; LSTM, GRU, RNN and LEM dip below":
            min(me[a] for a in ("ASRNN", "CoRNN", "LipschitzRNN", "NoisyRNN")) > max(me[a] for a in ("LSTM", "GRU", "RNN", "LEM")),
        "Table B4: AeLLE separates high from low accuracy better than mean LE, max LE and the raw spectra's PC1":
            b4["AeLLE"]["f1_interval"][0] > max(b4[n]["f1"] for n in ("Mean LE", "Max LE", "LE PCA")),
        "Table D5: no vanilla RNN lies on the high-accuracy side of the AeLLE PC1 median":
            d5["median"]["composition"].get("RNN", 0.0) < 0.02,
        "Fig. 3.15: the latents the head maps to a loss are a hyperplane, not the null space of its weights":
            max(abs(v - lv["target"]) for v in lv["predicted"]) < 1e-4 and max(abs(v - lv["bias"]) for v in lv["null_space_predicted"]) < 1e-4,
        "Table 3.2: pre-trained AeLLE has the highest F1 at every stage of training":
            all(t32[e]["AeLLE"] > max(t32[e][n] for n in base_names) for e in ep),
        "Table 3.1: before training, AeLLE already recalls most high-accuracy networks": t31[ep[0]]["AeLLE recall"] >= 0.8,
        "Table 3.1: early losses are precise but miss many high-accuracy networks": bool(later) and all(
            t31[e]["loss-based precision"] >= 0.9 and t31[e]["loss-based recall"] < t31[e]["AeLLE recall"] for e in later),
        "Table 3.3: more PCs give a better orthant classifier":
            all(t33[e][f"{max(pcs)} PCs"] > t33[e]["1 PCs"] for e in (ep[0], ep[-1])),
        "the row split (the authors') flatters the early-epoch F1": t31[ep[0]]["AeLLE F1, row split"] > t31[ep[0]]["AeLLE F1"],
    }
    verdicts = _verdicts(res)
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim


def test_asrnn_verdicts_follow_the_saved_numbers():
    """Chapter 3 (Figs. 3.2-3.4): most of the grid trained to finite losses, the saved correlations
    are those of the saved per-network numbers, and each verdict is what its criterion gives."""
    import scipy.stats

    res = _load("07_asrnn_eigenvalues")
    ok = np.asarray(res["finite"], dtype=bool)
    assert len(res["grid"]) == len(ok) and ok.mean() > 0.5
    loss, lam1, radius = (np.asarray(res[k], dtype=float)[ok] for k in ("loss", "lambda_1", "spectral_radius"))
    corr = res["correlations"]
    assert abs(scipy.stats.spearmanr(lam1, loss)[0] - corr["all"]["rho(lambda_1, loss)"]) < 1e-9
    assert abs(scipy.stats.spearmanr(radius, loss)[0] - corr["all"]["rho(max |mu|, loss)"]) < 1e-9
    pn = res["prednet"]
    n = res["settings"]["n_splits"]
    for inp in ("raw", "standardized"):
        le = np.asarray(pn["final_valid_mse"][f"{inp} / Lyapunov spectrum"])
        ei = np.asarray(pn["final_valid_mse"][f"{inp} / Jacobian eigenvalues"])
        assert len(le) == len(ei) == n and pn["summary"][inp]["lower_in"] == int(np.sum(le < ei))
    raw, std = pn["summary"]["raw"], pn["summary"]["standardized"]
    expect = {
        "Fig. 3.3: better-performing ASRNNs tend to have smaller first Lyapunov exponents":
            corr["all"]["rho(lambda_1, loss)"] > 0 and corr["all"]["p"] < 0.01,
        "Figs. 3.2-3.3: the spectra correlate with performance in a way the Jacobian eigenvalues do not":
            corr["within_difference_95ci"][0] > 0,
        "Fig. 3.4: the PredNet on exponents reaches a lower validation loss than the one on eigenvalues":
            raw["lower_in"] >= 0.8 * n and raw["wilcoxon_p"] < 0.05,
        "Fig. 3.4 with standardized inputs: the PredNet on exponents reaches a lower validation loss":
            std["lower_in"] >= 0.8 * n and std["wilcoxon_p"] < 0.05,
        "Fig. 3.4: the exponents' PredNet is lower throughout training after the first third":
            raw["split0_fraction_of_late_steps_below"] == 1.0,
    }
    verdicts = _verdicts(res)
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim


def test_aelle_force_verdicts_follow_the_saved_numbers():
    """Chapter 3 (Fig. 3.7, Table B2): the threshold is the median error, and each verdict is what
    its criterion gives on the saved errors and scores."""
    import scipy.stats

    res = _load("08_aelle_force")
    g, mae, b2 = np.asarray(res["g"]), np.asarray(res["mae"]), res["table_b2"]
    assert abs(res["threshold"] - np.median(mae)) < 1e-12
    assert all(0 <= b2[n]["f1"] <= 1 for n in b2)
    best_base = max(b2[n]["f1"] for n in ("Mean LE", "Max LE", "LE PCA"))
    expect = {
        "Fig. 3.7: networks with g > 1.6 tend to have lower accuracy":
            scipy.stats.mannwhitneyu(mae[g > 1.6], mae[g <= 1.6], alternative="greater").pvalue < 0.01,
        "Fig. 3.7: the high-accuracy threshold (the median error) is 0.57 MAE": abs(res["threshold"] - 0.57) < 0.1,
        "Table B2: the mean LE classifies much better than the max LE": b2["Mean LE"]["f1"] > b2["Max LE"]["f1_interval"][1],
        "Table B2: AeLLE separates high from low accuracy better than mean LE, max LE and the raw spectra's PC1":
            b2["AeLLE"]["f1_interval"][0] > best_base,
    }
    verdicts = _verdicts(res)
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim


def test_charrnn_prednet_and_aelle_verdicts_follow_the_saved_numbers():
    """Chapter 3 (Figs. 3.1, 3.8, Table B3): the statistics behind each verdict recomputed from
    the saved losses, sizes and p, and each verdict what its criterion gives."""
    import scipy.stats

    res = _load("09_aelle_charrnn")
    size, p, loss = (np.asarray(res[k]) for k in ("size", "p", "loss"))
    sizes = res["settings"]["char_sizes"]
    assert abs(res["threshold"] - np.median(loss)) < 1e-12 and sorted(set(size.tolist())) == sorted(sizes)
    assert np.all((p >= 0.04) & (p <= 0.40)) and np.all(np.isfinite(loss))
    low = [np.percentile(loss[size == h], 10) for h in sizes]
    assert np.allclose(low, res["low_decile_loss"])
    slopes = [np.polyfit(p[(size == h) & (p > 0.2)], loss[(size == h) & (p > 0.2)], 1)[0] for h in sizes]
    assert np.allclose(slopes, res["slope_above_0.2"])
    test = np.asarray(res["prednet_split"]["test"])
    pred = np.asarray(res["prednet_prediction"])
    rho = scipy.stats.spearmanr(loss[test], pred)[0]
    r2 = 1 - np.sum((loss[test] - pred) ** 2) / np.sum((loss[test] - loss[test].mean()) ** 2)
    assert abs(rho - res["prednet_quality"]["PredNet, full-state spectra"]["Spearman"]) < 1e-9
    pcs = np.asarray(res["pcs"])
    good = loss < res["threshold"]
    on_side = (pcs[:, 0] > np.median(pcs[:, 0]))[good].mean()
    assert abs(on_side - res["good_on_side"]) < 1e-12
    loss_rho, size_rho = scipy.stats.spearmanr(pcs[:, 0], loss)[0], scipy.stats.spearmanr(pcs[:, 0], size)[0]
    b3 = res["table_b3"]
    best_base = max(b3[n]["f1"] for n in ("Mean LE", "Max LE", "LE PCA"))
    expect = {
        "Fig. 3.1: larger networks reach a lower loss at the right p": bool(np.all(np.diff(low) < 0)),
        "Fig. 3.1: larger networks are more sensitive to p above a threshold": bool(np.all(np.diff(slopes) > 0)),
        "Fig. 3.1: PredNet on the spectra after 40 % of training predicts the final loss with moderate accuracy":
            rho >= 0.7 and r2 >= 0.5,
        "Fig. 3.1: PredNet's predictions capture the dependence of the loss on p for every size":
            bool(np.all(np.asarray(res["curve_r"]) >= 0.8)),
        "Fig. 3.8: the high-accuracy threshold (the median loss) is 1.75": abs(res["threshold"] - 1.75) < 0.1,
        "Fig. 3.8: the vast majority of high-accuracy networks lie on one side of the median of AeLLE's PC1": on_side >= 0.8,
        "Fig. 3.8: the latent plane orders networks by performance more than by size": abs(loss_rho) > abs(size_rho),
        "Table B3: all four classifiers achieve high accuracy": all(b3[n]["f1"] >= 0.8 for n in b3),
        "Table B3: AeLLE separates high from low accuracy better than mean LE, max LE and the raw spectra's PC1":
            b3["AeLLE"]["f1_interval"][0] > best_base,
    }
    verdicts = _verdicts(res)
    assert set(verdicts) == set(expect)
    for claim, passed in expect.items():
        assert verdicts[claim] == ("holds" if passed else "differs"), claim
