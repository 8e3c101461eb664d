"""top9: exact streaming top-k, receptive fields, resume, and multi-process equivalence."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import vizkit
import vizkit_plugins.top9.scan as top9_scan
from helpers import SHARED, SQUEEZENET_WEIGHTS, assert_no_hooks, needs_shared, run_vizkit

IMAGENETTE_VAL = SHARED / "data" / "imagenette" / "val"


@pytest.fixture(scope="module")
def image_file_list(tmp_path_factory) -> Path:
    """40 real Imagenette images (4 per class) listed in a text file."""
    needs_shared(IMAGENETTE_VAL)
    paths = [p for d in sorted(IMAGENETTE_VAL.iterdir()) for p in sorted(d.glob("*.jpg"))[:4]]
    listing = tmp_path_factory.mktemp("data") / "images.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    return listing


def run_top9(model, data, **options):
    options.setdefault("layer", "features.7")
    options.setdefault("channels", "0-7")
    options.setdefault("k", 5)
    options.setdefault("workers", 0)
    options.setdefault("patch_size", 32)
    return vizkit.run("top9", model, data=data, batch_size=options.pop("batch_size", 8), **options)


def test_values_are_exact_and_match_a_brute_force_top_k(squeezenet, image_file_list):
    result = run_top9(squeezenet, image_file_list)
    assert_no_hooks(squeezenet)
    values, images, positions = result.arrays["values"], result.arrays["image_index"], result.arrays["position"]
    assert values.shape == images.shape == (8, 5) and positions.shape == (8, 5, 2)
    paths = result["images"]
    # brute force: every image alone, through a plain forward hook
    captured = {}
    handle = squeezenet.features[7].register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    maxima = []
    try:
        with torch.no_grad():
            for path in paths:
                squeezenet(vizkit.load_images([path], vizkit.Preprocess()))
                maxima.append(captured["a"][0, :8])
    finally:
        handle.remove()
    per_image = torch.stack([m.flatten(1).amax(1) for m in maxima])  # [N, 8]
    for channel in range(8):
        order = sorted(range(len(paths)), key=lambda i: (-float(per_image[i, channel]), i))[:5]
        assert images[channel].tolist() == order, channel  # ties -> smaller image index
        assert len(set(images[channel].tolist())) == 5  # at most one activation per image
        for j, index in enumerate(order):
            row, col = positions[channel, j]
            fresh = maxima[index][channel]
            # the value reported is the projection pass's, recomputed on the unit's receptive-field
            # cut (other convolution shapes than the whole image's): equal to float32 rounding
            assert float(fresh[row, col]) == pytest.approx(values[channel, j], rel=1e-6, abs=1e-4)
            assert float(fresh.max()) == pytest.approx(values[channel, j], rel=1e-6, abs=1e-4)
    boxes = result.arrays["box"]
    assert np.all(boxes[..., 0] < boxes[..., 2]) and np.all(boxes[..., 2] <= 224)
    assert result.arrays["projections"].shape == (8, 5, 3, 32, 32)
    assert result.arrays["patches"].shape == (8, 5, 32, 32, 3) and result.arrays["patches"].dtype == np.uint8
    assert result["max_recompute_error"] <= 1e-4 + 1e-6 * float(np.abs(values).max())
    assert not result["first_layer_filters"]


def test_first_layer_shows_filters_and_failing_runs_leave_no_hooks(squeezenet, image_file_list):
    result = run_top9(squeezenet, image_file_list, layer="features.1", channels="0-3", k=3)
    assert result["first_layer_filters"] and result["receptive_field"] == 7
    assert list(result.figures) == ["top9_page01"]
    with pytest.raises(vizkit.UsageError, match="out of range"):
        run_top9(squeezenet, image_file_list, channels="0-600")
    assert_no_hooks(squeezenet)
    with pytest.raises(vizkit.VizkitError, match="unknown layer"):
        run_top9(squeezenet, image_file_list, layer="features.77")
    assert_no_hooks(squeezenet)


@pytest.mark.slow
def test_resume_after_interruption_gives_the_uninterrupted_result(squeezenet, image_file_list, tmp_path, monkeypatch):
    reference = run_top9(squeezenet, image_file_list)
    out = tmp_path / "run"
    original = top9_scan.scan_batches
    seen: list[int] = []

    def interrupted(loader, start):
        for number, images, indices in original(loader, start):
            if number == 3:
                raise KeyboardInterrupt
            seen.append(number)
            yield number, images, indices

    monkeypatch.setattr(top9_scan, "scan_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_top9(squeezenet, image_file_list, out=out, checkpoint_every=1)
    assert_no_hooks(squeezenet)
    assert (out / ".top9-scan.pt").exists() and not (out / "result.json").exists()
    monkeypatch.setattr(
        top9_scan,
        "scan_batches",
        lambda loader, start: (seen.append(n) or (n, x, i) for n, x, i in original(loader, start)),
    )
    seen.clear()
    resumed = run_top9(squeezenet, image_file_list, out=out, checkpoint_every=1, resume=True)
    assert seen == [3, 4]  # 40 images / batch 8 = 5 batches; 0-2 were done before the interruption
    for name in ("values", "image_index", "position", "box", "patches"):
        assert np.array_equal(resumed.arrays[name], reference.arrays[name]), name
    assert (out / ".top9-scan.pt").exists()  # kept until the result is saved (a failed save loses nothing)
    resumed.save(out)
    assert not (out / ".top9-scan.pt").exists() and (out / "result.json").exists()
    # a checkpoint from other settings is refused, not silently mixed in
    monkeypatch.setattr(top9_scan, "scan_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_top9(squeezenet, image_file_list, out=tmp_path / "other", checkpoint_every=1)
    monkeypatch.setattr(top9_scan, "scan_batches", original)
    with pytest.raises(vizkit.UsageError, match="different run"):
        run_top9(squeezenet, image_file_list, out=tmp_path / "other", k=4, resume=True)
    assert_no_hooks(squeezenet)


def test_running_top_k_ties_and_merging():
    state = vizkit.toolkit.RunningTopK.empty(1, 3)
    acts = torch.tensor([[[5.0]], [[7.0]], [[5.0]], [[5.0]], [[1.0]]])[:, :, :, None]  # [5,1,1,1]
    state.update(acts[[4, 3, 2]], torch.tensor([4, 3, 2]))
    state.update(acts[[1, 0]], torch.tensor([1, 0]))
    assert state.images[0].tolist() == [1, 0, 2] and state.values[0].tolist() == [7.0, 5.0, 5.0]
    shard_a, shard_b = vizkit.toolkit.RunningTopK.empty(1, 3), vizkit.toolkit.RunningTopK.empty(1, 3)
    shard_a.update(acts[[0, 2, 4]], torch.tensor([0, 2, 4]))
    shard_b.update(acts[[1, 3]], torch.tensor([1, 3]))
    shard_b.merge_state(shard_a)
    assert torch.equal(shard_b.images, state.images) and torch.equal(shard_b.values, state.values)


def test_receptive_fields_known_values_and_dilation():
    model = tvm.alexnet().eval()
    x = torch.zeros(1, 3, 224, 224)
    with vizkit.instrument(model) as im:
        sizes = {
            layer: int(
                vizkit.engine.receptive_boxes(im, x, layer)[6, 6, 2]
                - vizkit.engine.receptive_boxes(im, x, layer)[6, 6, 0]
            )
            for layer in ("features.0", "features.2", "features.5", "features.10")
        }
    assert sizes == {"features.0": 11, "features.2": 19, "features.5": 67, "features.10": 163}
    # a dilated, padded, strided conv stack: compare with the support of the gradient when all
    # weights are positive (no cancellation), which is exactly the receptive field
    net = nn.Sequential(
        OrderedDict(
            a=nn.Conv2d(1, 2, 3, stride=2, padding=1),
            b=nn.Conv2d(2, 2, 3, dilation=2, padding=2),
            c=nn.Conv2d(2, 1, 5, stride=2, dilation=3),
        )
    )
    for conv in net:
        nn.init.constant_(conv.weight, 1.0)
    x = torch.ones(1, 1, 61, 61, requires_grad=True)
    with vizkit.instrument(net) as im:
        boxes = vizkit.engine.receptive_boxes(im, x.detach(), "c")
    out = net(x)
    for row, col in [(0, 0), (3, 5), (out.shape[2] - 1, out.shape[3] - 1)]:
        (grad,) = torch.autograd.grad(out[0, 0, row, col], x, retain_graph=True)
        ys, xs = torch.where(grad[0, 0] != 0)
        assert boxes[row, col].tolist() == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(image_file_list, tmp_path):
    needs_shared(SQUEEZENET_WEIGHTS)
    common = [
        "run",
        "top9",
        "--model",
        "torchvision:squeezenet1_0",
        "--weights",
        str(SQUEEZENET_WEIGHTS),
        "--data",
        str(image_file_list),
        "--layer",
        "features.7",
        "--channels",
        "0-7",
        "--k",
        "5",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--patch-size",
        "32",
        "--quiet",
    ]
    single_run = run_vizkit([*common, "--out", str(tmp_path / "single")])
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    done = run_vizkit([*common, "--out", str(tmp_path / "multi")], processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    single, multi = vizkit.load_result(tmp_path / "single"), vizkit.load_result(tmp_path / "multi")
    assert multi[0]["processes"] == 2 and single[0]["processes"] == 1
    for name in ("values", "image_index", "position", "box", "patches", "projections"):
        assert np.array_equal(single[1][name], multi[1][name]), name


def test_fewer_images_than_k_and_maps_that_never_fire(bundled_model, tmp_path, capsys):
    """Two images, --k 9: two winners per map, said on stderr; a map that is zero on both images
    gets no winners (image index -1, blank tiles), is listed in silent_maps and drawn as such."""
    from helpers import sample

    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("Pomeranian", "car_wheel"):
        (folder / sample(name).name).symlink_to(sample(name))
    result = vizkit.run("top9", bundled_model, data=folder, layer="conv5", k=9, maps_per_page=4, pages=1)
    assert "only 2 images, so 2 winners per map instead of --k 9" in capsys.readouterr().err
    assert result["k"] == 2 and result["k_requested"] == 9
    values, index = result.arrays["values"], result.arrays["image_index"]
    silent = values == 0
    assert silent.any() and np.array_equal(index == -1, silent)
    assert not result.arrays["patches"][:, :2][silent].any() and not result.arrays["projections"][:, :2][silent].any()
    dead = [c for c, row in zip(result["channels"], silent) if row.all()]
    assert result["silent_maps"] == dead and dead
    assert (values[~silent] > 0).all()


def test_many_maps_on_one_page_keep_their_titles_apart():
    """--maps-per-page is open-ended: 4 maps a row made 100 maps a page 25 rows tall, capped to a
    quarter of its size, and every title ran over its neighbours' and the suptitle."""
    from vizkit.toolkit.figures import MAX_FIGURE_INCHES, overlapping_texts
    from vizkit_plugins.top9.figures import figure_pages

    rng = np.random.default_rng(0)
    maps, k, size = 100, 1, 16
    values = np.sort(rng.random((maps, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    arrays = {
        "image_index": np.zeros((maps, k), dtype=np.int64),
        "projections": rng.normal(size=(maps, k, 3, size, size)).astype(np.float16),
        "patches": rng.integers(0, 255, size=(maps, k, size, size, 3), dtype=np.uint8),
    }
    figure = figure_pages("conv5", list(range(maps)), values, arrays, None, maps, 1, n_images=3)["top9_page01"]
    assert max(figure.get_size_inches()) <= MAX_FIGURE_INCHES + 1e-6
    assert overlapping_texts(figure) == []
