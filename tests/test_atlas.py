"""The unit atlas (issue 28): its one scan against brute force on a tiny model (top-k with the tie
rule, statistics, class means, selectivity), its connections (weights between adjacent convs,
correlation elsewhere), its ablation against the model with the unit's weights zeroed, torchrun
against one process, the real model, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vizkit
from helpers import assert_no_hooks, run_vizkit
from vizkit.app.cli import main

pytestmark = pytest.mark.usefixtures("no_hooks_left")

TINY = '''
"""A tiny convnet for the atlas tests (32x32 inputs, 3 classes)."""
import torch
from torch import nn

import vizkit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


def build() -> nn.Module:
    generator = torch.Generator().manual_seed(3)
    model = Net()
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 8
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=32, crop=32))
    return model
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The model file and an ImageFolder of 3 classes x 5 images (colour-coded, noisy), with two
    identical images in class 0 (a tie the rule must break by the smaller index)."""
    root = tmp_path_factory.mktemp("atlas")
    (root / "net.py").write_text(TINY)
    rng = np.random.default_rng(0)
    for c, colour in enumerate(((220, 60, 40), (40, 200, 60), (50, 60, 210))):
        folder = root / "tree" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(np.array(colour) + rng.integers(-90, 90, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    twin = Image.open(root / "tree" / "class0" / "0.png")
    twin.save(root / "tree" / "class0" / "5.png")
    namespace: dict = {}
    exec(compile(TINY, str(root / "net.py"), "exec"), namespace)
    return {"root": root, "spec": f"{root / 'net.py'}:build", "tree": root / "tree", "build": namespace["build"]}


LAYERS = ["relu1", "pool2", "fc"]


def _activations(world: dict) -> tuple[dict[str, torch.Tensor], list[str], np.ndarray]:
    """Every image's activation of each layer (plain forward hooks), the paths, the classes."""
    model = world["build"]().eval()
    data = vizkit.data.image_list(world["tree"], vizkit.Preprocess(resize=32, crop=32))
    x = torch.stack([data[i][0] for i in range(len(data))])
    kept: dict[str, torch.Tensor] = {}
    handles = [
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: kept.__setitem__(name, out.detach()))
        for name in LAYERS
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return kept, [str(p) for p in data.paths], np.asarray(data.targets)


@pytest.fixture(scope="module")
def atlas(world, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("atlas-run") / "atlas"
    argv = ["run", "atlas", "--model", world["spec"], "--data", str(world["tree"]), "--layers", ",".join(LAYERS)]
    argv += ["--k", "4", "--patch-size", "8", "--workers", "0", "--batch-size", "4", "--ablation", "9", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    document, arrays = vizkit.load_result(out)
    return document, dict(arrays)


def test_top_k_of_every_unit_equals_brute_force(world, atlas):
    document, arrays = atlas
    acts, paths, _ = _activations(world)
    assert document["images"] == paths and document["layers"] == LAYERS and document["k"] == 4
    for layer in LAYERS:
        flat = acts[layer].flatten(2) if acts[layer].dim() > 2 else acts[layer][:, :, None]
        peak = flat.amax(2).numpy()  # [images, units]
        for unit in range(peak.shape[1]):
            order = sorted(range(len(paths)), key=lambda i: (-peak[i, unit], i))[:4]  # ties: smaller index
            expected_values = peak[order, unit]
            expected_images = np.where(expected_values == 0, -1, order)  # a winner of 0 did not fire
            np.testing.assert_array_equal(
                arrays[f"{layer}/top_images"][unit], expected_images, err_msg=f"{layer} {unit}"
            )
            got = arrays[f"{layer}/top_values"][unit]
            np.testing.assert_allclose(got[expected_images >= 0], expected_values[expected_values != 0], rtol=1e-5)
            assert np.isnan(got[expected_images < 0]).all()
    # the twin images tie everywhere: wherever both win, the smaller index comes first
    twins = (paths.index(str(world["tree"] / "class0" / "0.png")), paths.index(str(world["tree"] / "class0" / "5.png")))
    for layer in LAYERS:
        for row in arrays[f"{layer}/top_images"]:
            if twins[0] in row and twins[1] in row:
                assert list(row).index(twins[0]) < list(row).index(twins[1])


def test_statistics_class_means_and_selectivity_by_hand(world, atlas):
    document, arrays = atlas
    acts, _, classes = _activations(world)
    assert document["classes"] == ["class0", "class1", "class2"]
    for layer in LAYERS:
        flat = (acts[layer].flatten(2) if acts[layer].dim() > 2 else acts[layer][:, :, None]).double()
        peak, mean = flat.amax(2).numpy(), flat.mean(2).numpy()
        np.testing.assert_allclose(arrays[f"{layer}/mean"], mean.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(arrays[f"{layer}/mean_max"], peak.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(arrays[f"{layer}/active_fraction"], (peak > 0).mean(0), rtol=1e-6)
        class_mean = np.stack([peak[classes == c].mean(0) for c in range(3)], axis=1)
        np.testing.assert_allclose(arrays[f"{layer}/class_mean"], class_mean, rtol=1e-5, atol=1e-7)
        top = class_mean.max(1)
        rest = (class_mean.sum(1) - top) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.where((top == 0) & (rest == 0), 0.0, (top - rest) / (top + rest))
        if layer == "fc":  # logits go negative: the index is undefined there
            negative = class_mean.min(1) < 0
            assert np.isnan(arrays[f"{layer}/selectivity"][negative]).all()
            expected[negative] = np.nan
        np.testing.assert_allclose(arrays[f"{layer}/selectivity"], expected, rtol=1e-5, atol=1e-7)
        assert (arrays[f"{layer}/top_classes"][:, 0] == np.argmax(class_mean, 1)).all()
        counts = arrays[f"{layer}/hist_counts"]
        assert (counts.sum(1) == len(peak)).all()
        edges = arrays[f"{layer}/hist_edges"]
        for unit in range(peak.shape[1]):  # every maximum lies in the bin the histogram counted it in
            bins = np.searchsorted(edges[unit], peak[:, unit], side="right") - 1
            np.testing.assert_array_equal(np.bincount(bins, minlength=counts.shape[1]), counts[unit])


def test_connections_weights_between_adjacent_convs_else_correlation(world, atlas):
    document, arrays = atlas
    model = world["build"]()
    # relu1 -> pool2: only conv2 has weights in between: the kernel slices' norms
    assert document["connections"]["pool2"]["prev"] == {"layer": "relu1", "kind": "weights"}
    norms = model.conv2.weight.detach().flatten(2).norm(dim=2)  # [8 above, 6 below]
    for unit in range(8):
        order = torch.sort(-norms[unit], stable=True).indices[:5].numpy()
        np.testing.assert_array_equal(arrays["pool2/prev_units"][unit], order)
        np.testing.assert_allclose(arrays["pool2/prev_strength"][unit], norms[unit, order].numpy(), rtol=1e-6)
    for unit in range(6):
        order = torch.sort(-norms[:, unit], stable=True).indices[:5].numpy()
        np.testing.assert_array_equal(arrays["relu1/next_units"][unit], order)
    # pool2 -> fc: a linear layer over the flattened maps, 16 weights from each map
    assert document["connections"]["fc"]["prev"] == {"layer": "pool2", "kind": "weights"}
    per_map = model.fc.weight.detach().reshape(3, 8, 16).norm(dim=2)
    np.testing.assert_allclose(arrays["fc/prev_strength"][:, 0], per_map.max(1).values.numpy(), rtol=1e-6)
    assert "relu1/prev_units" not in arrays and "fc/next_units" not in arrays


def test_connections_by_correlation_when_layers_are_not_adjacent(world, tmp_path):
    out = tmp_path / "corr"
    argv = ["run", "atlas", "--model", world["spec"], "--data", str(world["tree"]), "--layers", "relu1,fc"]
    assert main([*argv, "--k", "2", "--patch-size", "8", "--workers", "0", "--quiet", "--out", str(out)]) == 0
    document, arrays = vizkit.load_result(out)
    assert document["connections"]["fc"]["prev"] == {"layer": "relu1", "kind": "correlation"}
    acts, _, _ = _activations(world)
    a = acts["relu1"].flatten(2).amax(2).double().numpy()
    b = acts["fc"].double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nan_to_num(np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :])
    for unit in range(3):  # fc's units: strongest |r| first
        order = np.argsort(-np.abs(r[:, unit]), kind="stable")[:5]
        np.testing.assert_array_equal(arrays["fc/prev_units"][unit], order)
        np.testing.assert_allclose(arrays["fc/prev_strength"][unit], r[order, unit], atol=1e-6)


def test_ablation_equals_the_model_with_the_units_weights_zeroed(world, atlas):
    document, arrays = atlas
    data = vizkit.data.image_list(world["tree"], vizkit.Preprocess(resize=32, crop=32))
    chosen = [0, 1, 2, 6, 7, 8, 11, 12, 13]  # round-robin over the classes (6, 5, 5 images)
    assert document["ablation"]["images"] == 9 and document["ablation"]["held_out"] is False
    x = torch.stack([data[i][0] for i in chosen])
    y = torch.tensor([data.targets[i] for i in chosen])

    def scores(model: nn.Module) -> tuple[np.ndarray, float]:
        with torch.no_grad():
            logits = model(x)
        hit = (logits.argmax(1) == y).double()
        accuracy = np.array([hit[y == c].mean().item() for c in range(3)])
        return accuracy, float(nn.functional.cross_entropy(logits, y))

    base = scores(world["build"]().eval())
    np.testing.assert_allclose(document["ablation"]["base_accuracy"], base[0])
    assert document["ablation"]["base_loss"] == pytest.approx(base[1], rel=1e-5)
    for layer, module in (("relu1", "conv1"), ("pool2", "conv2"), ("fc", "fc")):
        for unit in range(arrays[f"{layer}/ablation_loss"].shape[0]):
            model = world["build"]().eval()
            with torch.no_grad():  # zeroing a unit's output channel at the conv = zero after ReLU and pool
                getattr(model, module).weight[unit] = 0
                getattr(model, module).bias[unit] = 0
            accuracy, loss = scores(model)
            np.testing.assert_allclose(arrays[f"{layer}/ablation_accuracy"][unit], accuracy, err_msg=f"{layer} {unit}")
            assert arrays[f"{layer}/ablation_loss"][unit] == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_projections_and_patches_are_stored_for_every_winner(atlas):
    document, arrays = atlas
    for layer in LAYERS:
        images = arrays[f"{layer}/top_images"]
        projections = arrays[f"{layer}/projections"].astype(np.float32)
        assert projections.shape == (images.shape[0], 4, 3, 8, 8) and arrays[f"{layer}/patches"].dtype == np.uint8
        peak = np.abs(projections).reshape(*images.shape, -1).max(-1)
        assert np.allclose(peak[images >= 0], 1.0, atol=1e-3) or layer == "relu1"  # scaled to max |value| 1
        assert (peak[images < 0] == 0).all()
    assert document["receptive_field"]["relu1"] == 5 and document["spatial"] == {
        "relu1": True,
        "pool2": True,
        "fc": False,
    }


def test_hooks_are_removed_when_the_ablation_fails(world, tmp_path):
    options = {"data": world["tree"], "layers": "relu1,pool2", "k": 2, "patch_size": 8, "workers": 0, "ablation": 9}
    model = world["build"]()
    calls = {"n": 0, "fail_at": 10**9}

    def bomb(module, args):
        calls["n"] += 1
        if calls["n"] >= calls["fail_at"]:
            raise RuntimeError("boom")

    handle = model.fc.register_forward_pre_hook(bomb)
    try:
        vizkit.run("atlas", model, **options)
        calls["fail_at"], calls["n"] = calls["n"] - 1, 0  # the ablation's last forward
        with pytest.raises(RuntimeError, match="boom"):
            vizkit.run("atlas", model, **options)
    finally:
        handle.remove()
    assert_no_hooks(model)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "conv9"], "conv9"),
        (["--layers", "relu1", "--bins", "5"], "--bins must be even"),
        (["--layers", "relu1", "--ablation", "3", "--ablation-layers", "fc"], "not one of --layers"),
        (["--layers", "relu1", "--ablation", "3", "--labels", "LABELS"], "not one of the model's labels"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(world, tmp_path, capsys, extra, message):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    extra = [str(labels) if e == "LABELS" else e for e in extra]
    argv = ["run", "atlas", "--model", world["spec"], "--data", str(world["tree"]), "--workers", "0", "--quiet"]
    assert main([*argv, *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(world, tmp_path):
    common = ["run", "atlas", "--model", world["spec"], "--data", str(world["tree"]), "--layers", ",".join(LAYERS)]
    common += ["--k", "4", "--patch-size", "8", "--workers", "0", "--batch-size", "2", "--quiet"]
    single = run_vizkit([*common, "--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]
    multi = run_vizkit([*common, "--out", str(tmp_path / "two")], processes=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, a = vizkit.load_result(tmp_path / "one")
    two, b = vizkit.load_result(tmp_path / "two")
    assert two["processes"] == 2 and one["images"] == two["images"]
    assert set(a) == set(b)
    for name in a:
        if name.endswith(("top_images", "top_position", "top_box", "patches", "hist_counts", "top_classes")):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # exact
        else:  # sums over the shards in another order: float rounding
            np.testing.assert_allclose(
                a[name].astype(np.float64), b[name].astype(np.float64), rtol=1e-5, atol=1e-6, err_msg=name
            )
    assert json.dumps(one["connections"]) == json.dumps(two["connections"])


def test_the_bundled_model_on_real_images(bundled_model, tmp_path):
    """zfnet-compact on Imagenette-like photos of its own classes: every unit described, and the
    data's wnid folders matched to the model's classes for the ablation."""
    from helpers import SHARED, needs_shared

    source = SHARED / "data" / "imagenette" / "val"
    needs_shared(source)
    tree = tmp_path / "tree"
    for folder in sorted(source.iterdir())[:3]:
        (tree / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:3]:
            (tree / folder.name / path.name).symlink_to(path)
    result = vizkit.run(
        "atlas",
        bundled_model,
        data=tree,
        layers="conv2,conv5",
        k=3,
        patch_size=16,
        workers=0,
        ablation=3,
        ablation_layers="conv5",
    )
    assert result["class_labels"] == ["tench", "English springer", "cassette player"]
    assert result["ablation"]["base_accuracy_mean"] > 0.5
    assert result.arrays["conv5/ablation_accuracy"].shape == (128, 3)
    assert result["connections"]["conv5"]["prev"]["kind"] == "correlation"  # conv3 and conv4 lie between
    assert (result.arrays["conv2/top_images"][:, 0] >= 0).sum() > 64  # most of the 128 maps fired on 9 images
    assert_no_hooks(bundled_model)


class _Residual(nn.Module):
    """A skip connection across ``inner``: copies of its output cannot be made at the layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.inner(x))
        return self.head(x.mean((2, 3)))


def test_ablation_copies_at_the_input_across_a_skip_connection_and_both_ways_agree(world, monkeypatch):
    import vizkit_plugins.atlas.ablation as ablation

    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 1])
    residual = _Residual().eval()
    with vizkit.instrument(residual) as im:
        assert not ablation.copies_after_the_layer(im, residual.inner, x, 4)
        assert ablation.copies_after_the_layer(im, residual.head, x, 3)
        accuracy, loss = ablation.ablate_layer(im, "inner", 4, x, targets, targets, 3, samples_per_forward=4)
    for unit in range(4):  # the truth: the unit's weights zeroed
        model = _Residual().eval()
        with torch.no_grad():
            model.inner.weight[unit] = 0
            model.inner.bias[unit] = 0
            logits = model(x)
        assert loss[unit] == pytest.approx(float(nn.functional.cross_entropy(logits, targets)), rel=1e-5)
        hits = (logits.argmax(1) == targets).double()
        np.testing.assert_allclose(accuracy[unit], [hits[targets == c].mean().item() for c in range(3)])
    # on the tiny sequential model both ways give the same numbers
    model = world["build"]().eval()
    with vizkit.instrument(model) as im:
        fast = ablation.ablate_layer(im, "pool2", 8, x.repeat(1, 1, 3, 3)[:, :, :32, :32], targets, targets, 3, 4)
        monkeypatch.setattr(ablation, "copies_after_the_layer", lambda *args: False)
        slow = ablation.ablate_layer(im, "pool2", 8, x.repeat(1, 1, 3, 3)[:, :, :32, :32], targets, targets, 3, 4)
    np.testing.assert_allclose(fast[0], slow[0])
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-5)
