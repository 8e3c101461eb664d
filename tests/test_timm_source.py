"""The ``timm:`` model source (vizkit_plugins.timm_source): tiny timm models at random weights,
with the network blocked for every test, so nothing is ever downloaded."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch

import vizkit
import vizkit.app.cli
from helpers import assert_no_hooks, cli
from vizkit_plugins import timm_source

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any connection attempt fails, the Hugging Face Hub is offline and its caches are empty
    folders: a test that tried to download would fail, never fetch."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)


@pytest.fixture(scope="module")
def app() -> vizkit.framework.App:
    """The installed plugins, with the timm source registered as its entry point does (a
    checkout not yet reinstalled lacks the entry point)."""
    app = vizkit.make_app()
    if "timm" not in app.model_sources:
        app = vizkit.make_app(extra=[("timm", timm_source)])
    assert app.model_sources["timm"].prefix == "timm"
    return app


def test_layers_and_list_on_the_cli(app, monkeypatch, capsys):
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    code, out, err = cli(capsys, "layers", "timm:resnet10t", "--json", "--size", "64")
    assert code == 0, err
    layers = {layer["name"]: layer for layer in json.loads(out)}
    assert layers["conv1.0"]["type"] == "Conv2d"
    assert layers["layer4"]["shape"] == [512, 2, 2]
    code, out, err = cli(capsys, "list", "models")
    assert code == 0, err
    assert timm_source.USAGE in out


def test_load_carries_timm_preprocessing_and_imagenet_labels(app):
    model = vizkit.load_model("timm:resnet10t", app=app)
    info = vizkit.models.model_info(model)
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 176, 176) and config["crop_pct"] == 0.875
    eval_resize = timm.data.create_transform(**config).transforms[0].size  # timm's own eval transform
    assert info.preprocess == vizkit.Preprocess(resize=eval_resize, crop=176, mean=config["mean"], std=config["std"])
    assert vizkit.data.preprocess_for(model) == info.preprocess
    assert info.spec == "timm:resnet10t" and info.weights is None
    assert len(info.labels) == 1000 and info.labels[:2] == ["tench", "goldfish"]
    assert not model.training
    # another head: no ImageNet names; the user's labels win
    ten = vizkit.load_model("timm:convnext_atto?num_classes=10", app=app, labels=[str(i) for i in range(10)])
    assert ten.head.fc.out_features == 10 and vizkit.models.model_info(ten).labels[9] == "9"
    assert vizkit.models.model_info(vizkit.load_model("timm:convnext_atto?num_classes=10", app=app)).labels is None


def test_preprocess_from_other_configs():
    config = {"input_size": (3, 224, 224), "crop_pct": 1.0, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert timm_source.preprocess_from_config(config) == vizkit.Preprocess(224, 224, (0.5,) * 3, (0.5,) * 3)
    config = {"input_size": (3, 288, 288), "crop_pct": 0.95, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    assert timm_source.preprocess_from_config(config) == vizkit.Preprocess(303, 288, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert timm_source.preprocess_from_config({"input_size": (1, 28, 28), "mean": (0.5,), "std": (0.5,)}) is None


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_round_trip(app, tmp_path, suffix):
    torch.manual_seed(1)
    first = vizkit.load_model("timm:efficientnet_b0", app=app)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in first.state_dict().items()}, str(path))
    else:
        torch.save(first.state_dict(), path)
    torch.manual_seed(2)
    fresh = vizkit.load_model("timm:efficientnet_b0", app=app)
    again = vizkit.load_model("timm:efficientnet_b0", app=app, weights=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), first(x))
        assert not torch.allclose(fresh(x), first(x))
    info = vizkit.models.model_info(again)
    assert info.weights == str(path) and info.weights_sha256 == vizkit.models.sha256_file(path)
    assert info.preprocess == vizkit.models.model_info(first).preprocess  # still timm's own


def test_weights_that_do_not_fit_fail_in_one_line(app, tmp_path):
    path = tmp_path / "atto.pt"
    torch.save(vizkit.load_model("timm:convnext_atto", app=app).state_dict(), path)
    with pytest.raises(vizkit.UsageError, match="do not fit the model") as caught:
        vizkit.load_model("timm:resnet10t", app=app, weights=path)
    assert "\n" not in str(caught.value)
    with pytest.raises(vizkit.UsageError, match=r"10, 320\) in model"):  # the head differs
        vizkit.load_model("timm:convnext_atto?num_classes=10", app=app, weights=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(vizkit.UsageError, match="cannot read weights"):
        vizkit.load_model("timm:convnext_atto", app=app, weights=bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("timm:resnet10x", r"unknown timm model 'resnet10x' \(did you mean resnet10t"),
        ("timm:convnext_tinyy", r"did you mean convnext_tiny"),
        ("timm:zzqq", r"unknown timm model 'zzqq'; see timm.list_models\('\*zzqq\*'\)"),
        ("timm:", "no timm model named"),
        ("timm:hf-hub:timm/resnet18.a1_in1k", "hub and folder names are not supported"),
        ("timm:resnet10t?pretrain", "unknown option 'pretrain'"),
        ("timm:resnet10t?num_classes=ten", "num_classes must be a positive integer"),
    ],
)
def test_bad_specs_fail_in_one_line(app, spec, message):
    with pytest.raises(vizkit.UsageError, match=message) as caught:
        vizkit.load_model(spec, app=app)
    assert "\n" not in str(caught.value)


def test_timm_missing_says_how_to_install(app, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(vizkit.UsageError, match=r"needs timm; pip install vizkit\[timm\]"):
        vizkit.load_model("timm:resnet10t", app=app)
    fresh = vizkit.make_app(entry_point_group=None, extra=[("timm", timm_source)])
    assert "timm is not installed: pip install vizkit[timm]" in fresh.model_sources["timm"].description
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    code, _out, err = cli(capsys, "layers", "timm:resnet10t")
    assert code != 0 and "pip install vizkit[timm]" in err and len(err.strip().splitlines()) == 1


def test_pretrained_is_fetched_only_when_asked_and_fails_in_one_line_offline(app, monkeypatch, capsys):
    calls = []
    create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or create_model(*a, **k))
    vizkit.load_model("timm:resnet10t", app=app)
    assert calls == [{"pretrained": False}]
    with pytest.raises(
        vizkit.UsageError, match=r"pretrained weights for .resnet10t. \(hub unreachable: .*Error\).* --weights FILE"
    ) as caught:
        vizkit.load_model("timm:resnet10t?pretrained", app=app)
    assert "\n" not in str(caught.value) and calls[-1] == {"pretrained": True}
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    code, _out, err = cli(capsys, "layers", "timm:resnet10t.c3_in1k?pretrained")
    assert code != 0 and "'resnet10t.c3_in1k'" in err and "--weights" in err
    assert len(err.strip().splitlines()) == 1


def test_deconvnet_runs_on_a_timm_model_and_leaves_no_hooks(app, photo_path, no_hooks_left):
    model = vizkit.load_model("timm:resnet10t", app=app)
    small = vizkit.Preprocess(resize=72, crop=64)
    result = vizkit.run("deconvnet", model, images=[photo_path], preprocess=small, layer="layer3", top=2, app=app)
    assert result.summary["layer"] == "layer3" and len(result.summary["channels"]) == 2
    assert result.summary["predicted"][0]["label"] in vizkit.models.model_info(model).labels  # timm's names
    assert torch.isfinite(torch.as_tensor(result.arrays["projections"])).all()
    assert_no_hooks(model)
    assert not model.training


@pytest.mark.parametrize(
    "name", ["efficientnet_b0", "convnext_atto", "mobilenetv3_small_100", "ghostnet_100", "cspdarknet53"]
)
def test_both_projection_paths_agree_on_timm_models_that_stopped_the_explicit_path(app, name):
    """The five timm families whose SE gates, SiLU/GELU, LayerNorm, channel slices and chunks
    stopped the explicit path ('mul', 'silu', 'gelu', '__getitem__', an unrecorded tensor)."""
    model = vizkit.load_model(f"timm:{name}", app=app)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with vizkit.instrument(model) as im, torch.no_grad():
        logits = im(x)
        layer = vizkit.toolkit.default_layer(model, im, logits.shape[1])
        channel = int(im.activation(layer)[0].flatten(1).amax(1).argmax())
    with vizkit.instrument(model, layers=[layer]) as im:
        autograd = vizkit.project(im, x, layer, [channel], method="autograd").images
        explicit = vizkit.project(im, x, layer, [channel], method="explicit").images
    assert autograd.abs().amax() > 0
    assert (autograd - explicit).abs().amax() <= 1e-5 * autograd.abs().amax()
    assert_no_hooks(model)
