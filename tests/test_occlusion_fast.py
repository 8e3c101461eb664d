"""Occlusion's cost model and fast mode: projective field thresholding, adaptive drill-down, SSIM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import vizkit
from helpers import assert_no_hooks
from vizkit.app.cli import main
from vizkit_plugins.occlusion.analysis import fidelity_entry
from vizkit_plugins.occlusion.grid import OcclusionGrid, occluded_batch
from vizkit_plugins.occlusion.maps import (
    _coarse,
    _interpolate,
    _lattice,
    drill_down_maps,
    drill_levels,
    occlusion_maps,
)


class TwoConvs(nn.Module):
    """conv 3x3 -> relu -> conv 3x3 -> global average -> linear: small enough to redo by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def unoccluded(model, x, layer, channel=0, target=1) -> tuple[float, float]:
    """The unoccluded image's target probability and channel sum of ``layer``: what drill-down's
    change is measured from."""
    with vizkit.instrument(model) as im, torch.no_grad():
        logits = im(x)
        return float(logits.softmax(1)[0, target]), float(im.activation(layer)[0, channel].sum())


def bend(values: np.ndarray, spacing: int) -> np.ndarray:
    """|v[r - s, c] - 2 v[r, c] + v[r + s, c]| + the same along columns (edges repeated), by
    plain loops: how much linear interpolation at spacing s errs around each cell."""
    rows, cols = values.shape
    at = lambda r, c: values[min(max(r, 0), rows - 1), min(max(c, 0), cols - 1)]
    out = np.empty_like(values)
    for r in range(rows):
        for c in range(cols):
            out[r, c] = abs(at(r - spacing, c) - 2 * at(r, c) + at(r + spacing, c)) + abs(
                at(r, c - spacing) - 2 * at(r, c) + at(r, c + spacing)
            )
    return out


def neighbourhood_max(values: np.ndarray, radius: int) -> np.ndarray:
    """Each cell's largest value within ``radius`` cells (edges repeated), by plain loops."""
    padded = np.pad(values, radius, mode="edge")
    rows, cols = values.shape
    out = np.empty_like(values)
    for r in range(rows):
        for c in range(cols):
            out[r, c] = padded[r : r + 2 * radius + 1, c : c + 2 * radius + 1].max()
    return out


def maps_for(model, x, layer, grid, mode, **options):
    costs: list[vizkit.engine.OcclusionCost] = []
    with vizkit.instrument(model) as im:
        maps = occlusion_maps(
            im, x, layer, torch.tensor([0]), torch.tensor([1]), grid, torch.zeros(3), mode=mode, costs=costs, **options
        )
    assert_no_hooks(model)
    return maps, costs


@pytest.mark.parametrize("name", ["squeezenet", "resnet18", "two-convs"])
def test_fast_mode_with_tau_one_and_no_drill_down_equals_exact(name):
    model = {"squeezenet": tvm.squeezenet1_0, "resnet18": tvm.resnet18, "two-convs": TwoConvs}[name]().eval()
    size = 16 if name == "two-convs" else 96
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    layer = {"squeezenet": "features.12", "resnet18": "layer3", "two-convs": "conv2"}[name]
    grid = OcclusionGrid(size, size, size // 4, size // 8)
    exact, _ = maps_for(model, x, layer, grid, "exact")
    fast, _ = maps_for(model, x, layer, grid, "fast", tau=1.0, drill_down=1.0)
    for key in exact:
        assert np.array_equal(exact[key], fast[key]), key


def test_tau_crops_each_layers_change_to_its_centre_as_written_by_hand():
    """16x16 input, a 2 px occluder at (6, 6), tau = 0.25: at most 4 rows and columns of each
    16x16 conv output may change. conv1's change (rows/cols 5..8) fits; conv2's (4..9) is cut
    to its centre, 5..8, and everything outside keeps the unoccluded values."""
    model = TwoConvs().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    occluded = occluded_batch(x[0], [(6, 6)], 2, torch.zeros(3))
    with torch.no_grad():
        base1, base2 = model.conv1(x), model.conv2(torch.relu(model.conv1(x)))
        new1 = model.conv1(occluded)
        kept1 = base1.clone()
        kept1[..., 5:9, 5:9] = new1[..., 5:9, 5:9]  # conv1 changes rows 5..8 only: nothing cut
        new2 = model.conv2(torch.relu(kept1))
        kept2 = base2.clone()
        kept2[..., 5:9, 5:9] = new2[..., 5:9, 5:9]
        expected = model.fc(kept2.mean(dim=(2, 3))).softmax(1)[0, 1]
        exact = model.conv2(torch.relu(model.conv1(occluded)))
    with vizkit.instrument(model) as im, torch.no_grad():
        engine = vizkit.engine.IncrementalOcclusion(im, x, "conv2", tau=0.25)
        logits, layer = engine.evaluate([(6, 6)], 2, torch.zeros(3))
    assert torch.allclose(logits.softmax(1)[0, 1], expected, atol=1e-6)
    assert torch.allclose(layer[0], kept2[0], atol=1e-5)
    assert (exact[0] - layer[0]).abs().amax() > 1e-3  # the cut made a difference (on the ring 4 and 9)
    assert_no_hooks(model)


def test_cost_model_counts_multiply_adds_by_hand():
    """conv 3->4 and 4->5 (3x3) on 16x16 and a 5->3 linear: full = 256*4*27 + 256*5*36 + 15.
    A 2 px occluder at (6, 6) changes conv1 at 4x4 outputs and conv2 at 6x6; the linear layer
    after the global average is recomputed whole for every position."""
    model = TwoConvs().eval()
    x = torch.randn(1, 3, 16, 16)
    with vizkit.instrument(model) as im, torch.no_grad():
        engine = vizkit.engine.IncrementalOcclusion(im, x, "conv2")
        engine.evaluate([(6, 6)], 2, torch.zeros(3))
    full = 256 * 4 * 27 + 256 * 5 * 36 + 15
    needed = 16 * 4 * 27 + 36 * 5 * 36 + 15
    assert engine.cost.full == full and engine.cost.needed == needed and engine.cost.positions == 1
    assert engine.cost.bound == pytest.approx(full / needed)
    assert engine.cost.as_dict()["padding_overhead"] == 1.0


def test_drill_down_keeps_coarse_values_where_it_does_not_refine():
    model = TwoConvs().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    grid = OcclusionGrid(32, 32, 4, 2)  # 15 x 15 positions
    exact, _ = maps_for(model, x, "conv2", grid, "exact")
    coarse_only, costs = maps_for(model, x, "conv2", grid, "fast", tau=1.0, drill_down=0.0, levels=1)
    rows = cols = _coarse(15)
    assert rows == [0, 2, 4, 6, 8, 10, 12, 14] and costs[0].positions == 64
    p, q = exact["true_class_prob"][0], coarse_only["true_class_prob"][0]
    assert np.allclose(q[np.ix_(rows, cols)], p[np.ix_(rows, cols)], atol=1e-6)  # computed exactly
    assert q[0, 1] == pytest.approx((p[0, 0] + p[0, 2]) / 2, abs=1e-6)  # between two coarse cells
    assert q[1, 1] == pytest.approx((p[0, 0] + p[0, 2] + p[2, 0] + p[2, 2]) / 4, abs=1e-6)
    assert coarse_only["top_label"][0][1, 1] == exact["top_label"][0][0, 0]  # nearest coarse cell (ties: first)
    assert coarse_only["top_label"][0][1, 3] == exact["top_label"][0][0, 2]
    refined, costs = maps_for(model, x, "conv2", grid, "fast", tau=1.0, drill_down=0.25, levels=1)
    r = refined["true_class_prob"][0]
    # each cell's largest bend around it (3x3) of the change, |p - p0| and |a - a0| each relative
    # to its largest, at the coarse spacing (2)
    p0, a0 = unoccluded(model, x, "conv2")
    dp = np.abs(q.astype(np.float64) - p0)
    da = np.abs(coarse_only["feature_activity"][0].astype(np.float64) - a0)
    change = neighbourhood_max(bend(np.maximum(dp / dp.max(), da / da.max()), 2), 1)
    order = np.argsort(-change, axis=None, kind="stable")[: round(0.25 * 225)]
    chosen = np.zeros(225, bool)
    chosen[order] = True
    chosen = chosen.reshape(15, 15)
    chosen[np.ix_(rows, cols)] = True
    assert np.allclose(r[chosen], p[chosen], atol=1e-6)  # refined cells are exact
    assert np.array_equal(r[~chosen], q[~chosen])  # the others keep the interpolated coarse values
    assert costs[0].positions == int(chosen.sum())


def test_drill_levels_sample_at_least_twice_per_occluder_width():
    assert drill_levels(OcclusionGrid(224, 224, 16, 4)) == 1  # every 2nd of 53: 8 px apart
    assert drill_levels(OcclusionGrid(224, 224, 48, 8)) == 1  # every 2nd of 23: 16 px
    assert drill_levels(OcclusionGrid(224, 224, 48, 4)) == 2  # every 4th: 16 px
    assert drill_levels(OcclusionGrid(224, 224, 16, 1)) == 3  # every 8th: 8 px
    assert drill_levels(OcclusionGrid(224, 224, 48, 16)) == 1  # at least every other position
    assert drill_levels(OcclusionGrid(16, 16, 8, 1)) == 2  # every 4th of 9, not past the grid
    assert drill_levels(OcclusionGrid(10, 10, 8, 1)) == 1  # every 4th of 3 would be past it
    assert _lattice(13, 8) == [0, 8, 12] and _lattice(53, 4)[-2:] == [48, 52]


def synthetic(shape, peak, sign, where="probability"):
    """A flat map of the target's probability (0.001 when ``sign`` is +1: a class that is not the
    top one; 0.9 when -1) with a Gaussian bump of 0.012 at ``peak``, rising (+1) or dropping
    (-1), in the probability or the activity map; the other map stays flat."""
    rows, cols = np.indices(shape)
    bump = 0.012 * np.exp(-((rows - peak[0]) ** 2 + (cols - peak[1]) ** 2) / (2 * 2.0**2))
    base = 0.001 if sign > 0 else 0.9
    probability = np.full(shape, base) + (sign * bump if where == "probability" else 0)
    activity = np.full(shape, 5.0) + (sign * 100 * bump if where == "activity" else 0)
    return probability.astype(np.float32), activity.astype(np.float32), (base, 5.0)


def run_drill_down(truth_p, truth_a, unoccluded_values, fraction, levels):
    """:func:`drill_down_maps` with a ``compute`` that copies the true maps, recording its calls."""
    grid = OcclusionGrid(truth_p.shape[0] * 2 + 2, truth_p.shape[1] * 2 + 2, 4, 2)
    assert (grid.rows, grid.cols) == truth_p.shape
    p, a, top = np.zeros_like(truth_p), np.zeros_like(truth_a), np.zeros(truth_p.shape, dtype=np.int64)
    calls: list[list[tuple[int, int]]] = []

    def compute(cells):
        calls.append(list(cells))
        r, c = np.array(cells).T
        p[r, c], a[r, c], top[r, c] = truth_p[r, c], truth_a[r, c], 7
        return None

    mask = drill_down_maps(compute, grid, fraction, levels, a, p, top, unoccluded_values)
    return p, a, mask, calls, grid


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("where", ["probability", "activity"])
def test_drill_down_refines_a_rise_as_well_as_a_drop(sign, where):
    """A bump of the target's probability (or of the activity) between the coarse positions,
    up or down: drill-down refines down to it and shows its true peak, which interpolation from
    the coarse positions alone would flatten."""
    truth_p, truth_a, base = synthetic((33, 33), (9, 19), sign, where)
    p, a, mask, _, _ = run_drill_down(truth_p, truth_a, base, 0.1, 2)
    truth, shown = (truth_p, p) if where == "probability" else (truth_a, a)
    assert mask[9, 19] and mask[8:11, 18:21].all()  # the peak and its neighbours were computed
    assert shown[9, 19] == truth[9, 19]
    assert mask.mean() < 0.25  # and not the whole grid
    nodes = _lattice(33, 4)
    coarse = _interpolate(truth[np.ix_(nodes, nodes)], nodes, nodes, OcclusionGrid(68, 68, 4, 2))
    assert abs(coarse[9, 19] - truth[9, 19]) > 0.2 * np.ptp(truth)  # the coarse pass alone misses the peak
    # in the map's own scale: the largest error is a small part of the map's range
    assert np.abs(shown - truth).max() < 0.1 * np.ptp(truth)


def test_multi_level_drill_down_computes_exactly_the_cells_it_reports():
    """Three levels on a 29x29 grid: the coarse pass is every 4th row and column, each later
    pass lies on its own lattice, computes no cell twice and at most its fraction of that
    lattice; the mask is their union; every computed cell is exact; the rest is interpolated
    from the finest lattice; and occlusion_maps' fast mode gives the same maps and counts the
    same positions."""
    model = TwoConvs().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    grid = OcclusionGrid(32, 32, 4, 1)  # 29 x 29
    exact, _ = maps_for(model, x, "conv2", grid, "exact")
    fast, costs = maps_for(model, x, "conv2", grid, "fast", drill_down=0.2, levels=2)
    truth_p, truth_a = exact["true_class_prob"][0], exact["feature_activity"][0]
    p = np.zeros_like(truth_p)
    a = np.zeros_like(truth_a)
    top = np.zeros(truth_p.shape, dtype=np.int64)
    calls: list[list[tuple[int, int]]] = []

    def compute(cells):
        calls.append(list(cells))
        r, c = np.array(cells).T
        p[r, c], a[r, c], top[r, c] = truth_p[r, c], truth_a[r, c], exact["top_label"][0][r, c]

    mask = drill_down_maps(compute, grid, 0.2, 2, a, p, top, unoccluded(model, x, "conv2"))
    assert len(calls) == 3
    lattice4 = _lattice(29, 4)
    assert sorted(calls[0]) == [(r, c) for r in lattice4 for c in lattice4]
    lattice2 = set(_lattice(29, 2))
    assert all(r in lattice2 and c in lattice2 for r, c in calls[1])
    assert len(calls[1]) <= round(0.2 * len(lattice2) ** 2) and len(calls[2]) <= round(0.2 * 29 * 29)
    flat = [cell for call in calls for cell in call]
    assert len(flat) == len(set(flat)) == int(mask.sum()) == costs[0].positions
    assert mask[tuple(np.array(flat).T)].all()
    assert np.allclose(p[mask], truth_p[mask], atol=0) and not np.allclose(p[~mask], truth_p[~mask], atol=1e-6)
    assert np.allclose(fast["true_class_prob"][0], p, atol=1e-6) and np.array_equal(fast["top_label"][0], top)
    assert np.allclose(fast["feature_activity"][0], a, rtol=1e-5, atol=1e-5)


def test_fidelity_is_stated_in_the_maps_scale():
    """max |dp| relative to the map's range: a map spanning 0-0.02 with an error of 0.002 is
    off by 10%; SSIM (data range: the exact map's) only when every cell is checked."""
    exact_p = np.linspace(0, 0.02, 49).reshape(7, 7)
    fast_p = exact_p.copy()
    fast_p[3, 3] += 0.002
    activity = np.arange(49.0).reshape(7, 7)
    labels = np.zeros((7, 7), dtype=np.int64)
    fast = {"true_class_prob": fast_p, "feature_activity": activity, "top_label": labels}
    cells = np.arange(49)
    whole = fidelity_entry(
        fast,
        {
            "true_class_prob": exact_p.reshape(-1),
            "feature_activity": activity.reshape(-1),
            "top_label": labels.reshape(-1),
        },
        cells,
    )
    assert whole["max_abs_delta_p"] == pytest.approx(0.002)
    assert whole["probability_range"] == pytest.approx(0.02)
    assert whole["max_abs_delta_p_relative"] == pytest.approx(0.1)
    assert whole["mean_abs_delta_p_relative"] == pytest.approx(0.1 / 49, abs=1e-4)
    assert whole["max_abs_delta_activity_relative"] == 0 and whole["top_label_agreement"] == 1
    assert whole["ssim_probability"] == pytest.approx(vizkit.toolkit.ssim(fast_p, exact_p, data_range=0.02), abs=1e-4)
    assert whole["ssim_probability"] < vizkit.toolkit.ssim(fast_p, exact_p, data_range=1.0)  # range 1 hides it
    sample = np.array([3 * 7 + 3, 0, 48])
    part = fidelity_entry(
        fast,
        {
            key: value.reshape(-1)[sample]
            for key, value in [("true_class_prob", exact_p), ("feature_activity", activity), ("top_label", labels)]
        },
        sample,
    )
    assert part["max_abs_delta_p_relative"] == pytest.approx(0.1) and "ssim_probability" not in part


def test_ssim_hand_examples():
    a = np.arange(49, dtype=np.float64).reshape(7, 7)
    assert vizkit.toolkit.ssim(a, a) == pytest.approx(1.0)
    # one 7x7 window; b = a + 1: equal variances, so SSIM is the luminance term alone
    c1 = (0.01 * 48) ** 2
    assert vizkit.toolkit.ssim(a + 1, a) == pytest.approx((2 * 24 * 25 + c1) / (24**2 + 25**2 + c1))
    # anti-correlated: covariance = -variance
    variance = a.var(ddof=1)
    c2 = (0.03 * 48) ** 2
    expected = ((2 * 24 * 24 + c1) * (-2 * variance + c2)) / ((2 * 24**2 + c1) * (2 * variance + c2))
    assert vizkit.toolkit.ssim(48 - a, a) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        vizkit.toolkit.ssim(a, a[:6])
    skimage = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    x, y = rng.random((23, 23)), rng.random((23, 23))
    assert vizkit.toolkit.ssim(x, y, data_range=1.0) == pytest.approx(
        skimage.structural_similarity(x, y, data_range=1.0)
    )


def test_fast_mode_from_the_cli_reports_fidelity_and_cost(tmp_path, photo_path, capsys):
    out = tmp_path / "fast"
    argv = ["run", "occlusion", "--model", "zfnet-compact", "--image", str(photo_path), "--size", "32"]
    argv += ["--stride", "16", "--mode", "fast", "--tau", "0.6", "--drill-down", "0.3", "--check", "1000"]
    assert main([*argv, "--explain", "--out", str(out), "--quiet"]) == 0
    assert "occlusion cost" in capsys.readouterr().err
    document = json.loads((out / "result.json").read_text())
    summary = document.get("summary", document)
    assert summary["mode"] == "fast" and summary["tau"] == 0.6 and summary["drill_down"] == 0.3
    (fidelity,) = summary["fidelity"]["per_image"]
    assert summary["fidelity"]["positions_checked"] == summary["positions"]  # --check covers the grid
    assert 0 <= fidelity["max_abs_delta_p"] <= 1 and 0 <= fidelity["top_label_agreement"] <= 1
    assert -1 <= fidelity["ssim_probability"] <= 1 and -1 <= fidelity["ssim_activity"] <= 1
    assert summary["positions_evaluated"][0] < summary["positions"]
    cost = summary["cost"][0]
    assert cost["bound"] > 1 and cost["macs_full_forward"] > cost["macs_needed_per_position"] > 0
    assert math.isfinite(cost["padding_overhead"])
    assert 0 <= fidelity["max_abs_delta_p_relative"] <= 1 and fidelity["probability_range"] > 0
    sampled = tmp_path / "sampled"
    assert main([*argv[:-2], "--check", "5", "--out", str(sampled), "--quiet"]) == 0
    document = json.loads((sampled / "result.json").read_text())
    (entry,) = document.get("summary", document)["fidelity"]["per_image"]
    assert "ssim_probability" not in entry and 0 <= entry["max_abs_delta_p_relative"] <= 1


@pytest.mark.parametrize(
    "option,value",
    [
        ("--tau", "0"),
        ("--tau", "1.5"),
        ("--drill-down", "-0.1"),
        ("--drill-down", "1.5"),
        ("--drill-down", "half"),
        ("--check", "-1"),
    ],
)
def test_bad_fast_options_are_one_line_errors(option, value, photo_path, tmp_path, capsys):
    argv = ["run", "occlusion", "--model", "zfnet-compact", "--image", str(photo_path), "--mode", "fast"]
    assert main([*argv, option, value, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert option in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_fast_mode_does_not_depend_on_the_batch():
    """Windows of a batch are padded to a common size; with tau < 1 the padding must not make
    border positions (whose capped windows are smaller) more exact than they would be alone."""
    model = tvm.squeezenet1_0().eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    grid = OcclusionGrid(96, 96, 24, 12)
    alone, _ = maps_for(model, x, "features.12", grid, "fast", tau=0.4, drill_down=1.0, batch_size=1)
    batched, _ = maps_for(model, x, "features.12", grid, "fast", tau=0.4, drill_down=1.0, batch_size=9)
    exact, _ = maps_for(model, x, "features.12", grid, "exact")
    assert np.allclose(alone["true_class_prob"], batched["true_class_prob"], atol=1e-6)
    assert np.allclose(alone["feature_activity"], batched["feature_activity"], rtol=1e-5, atol=1e-4)
    assert not np.allclose(alone["feature_activity"], exact["feature_activity"], rtol=1e-3)  # tau did cut
