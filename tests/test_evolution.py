"""evolution (Fig. 4): per snapshot, each chosen map's strongest activation over a fixed sample,
checked against a plain forward of the snapshot weights; resume; errors; no hooks left."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import vizkit
from helpers import assert_no_hooks
from vizkit.app.cli import main
from vizkit.data import ImageList

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


@pytest.fixture(scope="module")
def training_run(tiny_imagenette, tmp_path_factory):
    """A real 3-epoch `vizkit train` run keeping snapshots at epochs 1 and 3."""
    out = tmp_path_factory.mktemp("run")
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_imagenette),
                "--epochs",
                "3",
                "--batch-size",
                "6",
                "--out",
                str(out),
                "--workers",
                "0",
                "--snapshot-epochs",
                "1,3",
                "--quiet",
            ]
        )
        == 0
    )
    return out


def plain_maxima(run_dir, epoch: int, paths) -> dict[str, torch.Tensor]:
    """[maps, images] maximum of every map of every ZF block, by calling the blocks in order."""
    model = vizkit.models.zfnet.zfnet_compact()
    model.load_state_dict(torch.load(run_dir / f"weights_epoch{epoch:03d}.pt", weights_only=True))
    model.eval()
    x = vizkit.load_images(paths, vizkit.Preprocess(resize=160, crop=144))
    maxima = {}
    with torch.no_grad():
        for name in LAYERS:
            x = getattr(model, name)(x)
            maxima[name] = x.flatten(2).amax(dim=2).t()
    return maxima


def test_evolution_matches_a_plain_forward_of_each_snapshot(training_run, recorded_models, tmp_path):
    out = tmp_path / "evo"
    assert (
        main(
            [
                "run",
                "evolution",
                "--run",
                str(training_run),
                "--sample",
                "10",
                "--maps",
                "3",
                "--patch-size",
                "24",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    (model,) = recorded_models
    assert_no_hooks(model)
    summary, arrays = vizkit.load_result(out)
    assert summary["epochs"] == [1, 3] and summary["layers"] == list(LAYERS) and summary["sample_images"] == 10
    assert {"evolution", "evolution_strength"} <= {p.stem for p in out.glob("*.png")}
    assert arrays["projections"].shape == (5, 3, 2, 3, 24, 24) and arrays["patches"].shape == (5, 3, 2, 24, 24, 3)
    paths = summary["images"]
    for e, epoch in enumerate([1, 3]):
        maxima = plain_maxima(training_run, epoch, paths)
        for l, layer in enumerate(LAYERS):
            channels = summary["channels"][layer]
            assert len(channels) == 3 and arrays["channels"][l].tolist() == channels
            reference = maxima[layer][channels]  # [maps, images]
            np.testing.assert_allclose(arrays["values"][l, :, e], reference.amax(dim=1).numpy(), rtol=1e-4, atol=1e-5)
            best = reference.argmax(dim=1).numpy()
            np.testing.assert_array_equal(arrays["image_index"][l, :, e], best)
            assert np.abs(arrays["projections"][l, :, e].astype(np.float32)).reshape(3, -1).max(
                axis=1
            ) == pytest.approx(1.0, abs=1e-3)
    # the maps are active at the last snapshot (no blank rows by construction)
    final = plain_maxima(training_run, 3, paths)
    for layer in LAYERS:
        assert (final[layer][summary["channels"][layer]].amax(dim=1) > 0).all()


def test_projection_is_the_deconvnet_of_that_activation(training_run):
    """One tile against vizkit.project run directly on the winning image at the winning position."""
    result = vizkit.run("evolution", None, run=str(training_run), sample=6, maps=2, layers=("conv3",), patch_size=32)
    arrays, summary = result.arrays, result.summary
    model = vizkit.models.zfnet.zfnet_compact()
    model.load_state_dict(torch.load(training_run / "weights_epoch003.pt", weights_only=True))
    model.eval()
    image = summary["images"][int(arrays["image_index"][0, 0, 1])]
    x = vizkit.load_images([image], vizkit.Preprocess(resize=160, crop=144))
    channel = int(arrays["channels"][0, 0])
    with vizkit.instrument(model) as im:
        direct = vizkit.project(im, x, "conv3", [channel], position=tuple(arrays["position"][0, 0, 1].tolist()))
        boxes = vizkit.engine.receptive_boxes(im, x, "conv3")
    assert float(direct.values[0, 0]) == pytest.approx(float(arrays["values"][0, 0, 1]), rel=1e-5)
    row, col = arrays["position"][0, 0, 1]
    tile = vizkit.toolkit.crop_to_box(direct.images[0, 0], boxes[row, col].tolist(), 32, 0.0)
    tile = tile / tile.abs().max()
    np.testing.assert_allclose(arrays["projections"][0, 0, 1].astype(np.float32), tile.numpy(), atol=2e-3)
    assert_no_hooks(model)


@pytest.mark.slow
def test_resume_skips_finished_snapshots(training_run, tmp_path, monkeypatch):
    import vizkit_plugins.evolution.scan as evolution_scan  # where the snapshots are scanned

    options = dict(run=str(training_run), sample=6, maps=2, patch_size=16)
    reference = vizkit.run("evolution", None, **options)
    calls, projected = [], []
    scan, project_winners = evolution_scan.scan, vizkit.toolkit.project_winners

    def counted(*args, **kwargs):
        calls.append(1)
        return scan(*args, **kwargs)

    def interrupted(*args, **kwargs):
        projected.append(1)
        if len(projected) == len(LAYERS) + 1:  # epoch 1 done (one call per layer), stop during epoch 3
            raise KeyboardInterrupt
        return project_winners(*args, **kwargs)

    monkeypatch.setattr(evolution_scan, "scan", counted)
    monkeypatch.setattr("vizkit.toolkit.winners.project_winners", interrupted)  # where vizkit.toolkit's name resolves
    with pytest.raises(KeyboardInterrupt):
        vizkit.run("evolution", None, out=tmp_path, **options)
    assert sorted(p.name for p in (tmp_path / ".evolution").iterdir()) == ["choice.pt", "epoch001.pt"]
    calls.clear()
    resumed = vizkit.run("evolution", None, out=tmp_path, resume=True, **options)
    assert len(calls) == 1  # only epoch 3 was scanned again
    for key in ("values", "image_index", "channels", "projections"):
        np.testing.assert_array_equal(resumed.arrays[key], reference.arrays[key])
    assert (tmp_path / ".evolution").is_dir()  # kept until the result is saved (a failed save loses nothing)
    resumed.save(tmp_path)
    assert not (tmp_path / ".evolution").exists() and (tmp_path / "result.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "2"], "no snapshot for epoch 2"),
        (["--layers", "nope"], "nope"),
        (["--maps", "0"], "--maps"),
    ],
)
def test_bad_options_fail_in_one_line(training_run, recorded_models, tmp_path, capsys, extra, message):
    assert (
        main(
            [
                "run",
                "evolution",
                "--run",
                str(training_run),
                "--sample",
                "4",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                *extra,
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error
    assert not (tmp_path / "o" / "result.json").exists()
    for model in recorded_models:
        assert_no_hooks(model)


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["run", "evolution", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a vizkit training run" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"model": "zfnet-compact", "data": str(tmp_path)}))
    assert main(["run", "evolution", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no weight snapshots" in capsys.readouterr().err


def test_sample_from_data_option(training_run, tiny_imagenette):
    data = ImageList(
        sorted((tiny_imagenette / "val").rglob("*.jpg")), preprocess=vizkit.Preprocess(resize=160, crop=144)
    )
    result = vizkit.run("evolution", None, run=str(training_run), data=data, sample=100, maps=1, layers=("conv1",))
    assert result.summary["sample_images"] == 9
    assert all("/val/" in p for p in result.summary["images"])


def test_a_layer_with_no_active_map_is_left_empty_not_a_crash(training_run, tmp_path, capsys):
    """conv1 switched off in every snapshot (a huge negative bias): no map of it is active at
    the last one, so none is chosen; the run used to fail with an IndexError in the projection."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(training_run, run_dir)
    for path in run_dir.glob("weights_epoch*.pt"):
        state = torch.load(path, weights_only=True)
        state["conv1.conv.bias"].fill_(-1e6)
        torch.save(state, path)
    result = vizkit.run("evolution", None, run=str(run_dir), sample=4, maps=2, layers=("conv1", "conv2"), patch_size=16)
    summary, arrays = result.summary, result.arrays
    assert summary["channels"]["conv1"] == [] and len(summary["channels"]["conv2"]) == 2
    assert summary["median_settled_epoch"]["conv1"] is None and summary["winner_changes"]["conv1"] is None
    assert arrays["channels"][0].tolist() == [-1, -1] and np.isnan(arrays["values"][0]).all()
    assert "no map of conv1 is active" in capsys.readouterr().err
    assert {"evolution", "evolution_strength"} <= set(result.figures)


def _fake_snapshots(epochs: list[int], maps: int, patch: int = 8) -> dict[int, dict]:
    generator = torch.Generator().manual_seed(0)
    return {
        epoch: {
            "conv1": {
                "values": torch.rand(maps, generator=generator),
                "image": torch.arange(maps) % 3,
                "position": torch.zeros(maps, 2, dtype=torch.long),
                "projection": torch.rand(maps, 3, patch, patch, generator=generator).half(),
                "patch": torch.zeros(maps, patch, patch, 3, dtype=torch.uint8),
            }
        }
        for epoch in epochs
    }


def test_many_maps_get_no_legend_that_swamps_the_strength_figure():
    """40 maps used to get a 40-entry legend, taller than the plot (tight_layout gave up with a warning)."""
    from vizkit_plugins.evolution.analysis import assemble
    from vizkit_plugins.evolution.figures import LEGEND_MAPS

    paths = [f"/x/{i}.jpg" for i in range(3)]
    images = ImageList(paths, preprocess=vizkit.Preprocess(resize=160, crop=144))
    for maps in (LEGEND_MAPS, 40):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = assemble(
                "run", {}, ["conv1"], {"conv1": list(range(maps))}, _fake_snapshots([1, 2], maps), images, 8
            )
            figure = result.figures["evolution_strength"]
        (ax,) = figure.axes
        assert (ax.get_legend() is not None) == (maps <= LEGEND_MAPS)
        assert len(ax.get_lines()) == maps


def test_one_snapshot_has_no_settled_epoch():
    """With a single snapshot nothing can be seen to settle: None, not that snapshot's epoch."""
    from vizkit_plugins.evolution.analysis import assemble

    images = ImageList([f"/x/{i}.jpg" for i in range(3)], preprocess=vizkit.Preprocess(resize=160, crop=144))
    result = assemble("run", {}, ["conv1"], {"conv1": [0, 1]}, _fake_snapshots([5], 2), images, 8)
    assert result.summary["median_settled_epoch"] == {"conv1": None}
    assert result.summary["winner_changes"] == {"conv1": 0.0}
    two = assemble("run", {}, ["conv1"], {"conv1": [0, 1]}, _fake_snapshots([1, 5], 2), images, 8)
    assert two.summary["median_settled_epoch"] == {"conv1": 1.0}
