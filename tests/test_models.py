"""Model specs, weights and labels."""

from __future__ import annotations

import textwrap

import pytest
import torch

import vizkit
from helpers import LABELS, needs_shared


class Payload:
    """An object only arbitrary unpickling can restore."""


def test_torchvision_spec_and_unknown_names():
    model = vizkit.load_model("torchvision:alexnet")
    assert type(model).__name__ == "AlexNet" and not model.training
    with pytest.raises(vizkit.UsageError, match="did you mean alexnet"):
        vizkit.load_model("torchvision:alexnett")
    with pytest.raises(vizkit.UsageError, match=r"unknown model 'zfnett'.*zfnet"):
        vizkit.load_model("zfnett")


def test_file_and_module_factories(tmp_path, monkeypatch):
    source = tmp_path / "mymodels.py"
    source.write_text(
        textwrap.dedent("""
        import torch.nn as nn
        def tiny():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        not_a_model = 3
    """)
    )
    assert len(list(vizkit.load_model(f"{source}:tiny").children())) == 5
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(list(vizkit.load_model("mymodels:tiny").children())) == 5
    with pytest.raises(vizkit.UsageError, match="not a callable"):
        vizkit.load_model("mymodels:missing")
    with pytest.raises(vizkit.UsageError, match="model file not found"):
        vizkit.load_model(f"{tmp_path}/nothere.py:tiny")


def test_weights_round_trip_and_refusal(tmp_path):
    torch.manual_seed(0)
    model = vizkit.load_model("zfnet")
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = vizkit.load_model("zfnet", weights=path)
    assert torch.equal(loaded.conv1.conv.weight, model.conv1.conv.weight)
    sha = vizkit.models.model_info(loaded).weights_sha256
    assert sha and len(sha) == 64

    evil = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(vizkit.UsageError, match="--trust-weights"):
        vizkit.load_model("zfnet", weights=evil)
    other = tmp_path / "other.pt"
    torch.save(vizkit.load_model("torchvision:alexnet").state_dict(), other)
    with pytest.raises(vizkit.UsageError, match="do not fit"):
        vizkit.load_model("zfnet", weights=other)


def test_labels(tmp_path):
    needs_shared(LABELS)
    labels = vizkit.data.read_labels(LABELS)
    assert len(labels) == 1000 and labels[259] == "Pomeranian"
    plain = tmp_path / "labels.txt"
    plain.write_text("cat\ndog\n")
    assert vizkit.data.read_labels(plain) == ["cat", "dog"]
    with pytest.raises(vizkit.UsageError, match="labels file not found"):
        vizkit.data.read_labels(tmp_path / "none.txt")


def test_registry_lists_models():
    assert "zfnet" in vizkit.list_models()
    assert vizkit.list_models(pattern="zf*") == [n for n in vizkit.list_models() if n.startswith("zf")]
