"""result.json's ``params`` holds the options that applied to the run: an option whose
``applies`` says it had no effect (occlusion's --drill-down outside fast mode), or that the
analysis found did not apply to its inputs (``result.meta["not_applicable"]``), is left out."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import vizkit
from helpers import assert_no_hooks
from vizkit.framework.analysis import applied_params


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


def test_applied_params_leaves_out_what_did_not_apply():
    options = [
        vizkit.Option("mode", ("exact", "fast"), "exact"),
        vizkit.Option("drill_down", float, 0.15, applies=lambda o: o["mode"] == "fast"),
        vizkit.Option("sizes", int, multiple=True),
        vizkit.Option("exclude", str, "x"),
    ]
    exact = {"mode": "exact", "drill_down": 0.15, "sizes": (1, 2), "exclude": "x"}
    assert applied_params(options, exact) == {"mode": "exact", "sizes": [1, 2], "exclude": "x"}
    assert applied_params(options, {**exact, "mode": "fast"}, ["exclude"]) == {
        "mode": "fast",
        "drill_down": 0.15,
        "sizes": [1, 2],
    }
    assert applied_params(options, exact, "exclude") == {"mode": "exact", "sizes": [1, 2]}  # one name, not letters


@pytest.mark.parametrize("mode", ["exact", "batched", "fast"])
def test_occlusion_records_the_fast_mode_options_in_fast_mode_only(mode, tmp_path):
    model = _classifier()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = vizkit.run("occlusion", model, images=images, layer="4", size=8, stride=8, mode=mode, check=4)
    assert_no_hooks(model)
    result.save(tmp_path / "out")
    params = json.loads((tmp_path / "out" / "result.json").read_text())["params"]
    fast_only = {"tau", "drill_down", "check"}
    if mode == "fast":
        assert fast_only <= set(params) and params["check"] == 4
    else:
        assert not fast_only & set(params)
    assert params["mode"] == mode and params["size"] == 8 and params["seed"] == 0  # the rest as before


def _applied(analysis: str, **given: Any) -> set[str]:
    spec = vizkit.framework.get_app().analysis(analysis)
    return set(applied_params(spec.options, spec.resolve_options(given)))


def test_attribution_records_each_methods_options_only_with_that_method():
    method_options = {"steps", "window", "stride", "samples", "nt_type", "stdev"}
    assert not method_options & _applied("attribution", method="saliency,layergradcam")
    assert method_options & _applied("attribution", method="integratedgradients") == {"steps"}
    assert method_options & _applied("attribution", method="occlusion") == {"window", "stride"}
    assert method_options & _applied("attribution", method="nt-integratedgradients") == {
        "steps",
        "samples",
        "nt_type",
        "stdev",
    }
    assert method_options <= _applied("attribution", method="all,nt-saliency")
    assert {"baseline", "layer", "deletion_steps", "rule"} <= _applied("attribution", method="saliency")


def test_invariance_and_deconvnet_record_only_the_options_that_applied():
    ranges = {"range_translate", "range_scale", "range_rotate"}
    assert ranges & _applied("invariance", layers="conv1", transforms="rotate") == {"range_rotate"}
    assert ranges <= _applied("invariance", layers="conv1")
    assert "top" in _applied("deconvnet", layer="conv5")
    assert "top" not in _applied("deconvnet", layer="conv5", channels="0-3")
    assert "rank" not in _applied("deconvnet", layer="conv5", channels="0-3")
    assert "cv_folds" in _applied("probes", layers="conv5", grid="0.01,0.1")
    assert "cv_folds" not in _applied("probes", layers="conv5", grid="0.001")  # one C: nothing cross-validated


def test_an_analysis_can_say_an_option_did_not_apply_to_its_inputs(tmp_path):
    """``result.meta["not_applicable"]``, as probes does when its default --exclude names no folder."""

    def run(ctx: vizkit.RunContext, exclude: str, k: int) -> vizkit.Result:
        result = vizkit.Result(summary={"k": k})
        result.meta["not_applicable"] = ["exclude"]
        return result

    class Plugin:
        @vizkit.hookimpl
        def register_analyses(self, register):
            register(
                vizkit.Analysis(
                    name="says-what-applied",
                    description="test",
                    run=run,
                    inputs="images",
                    options=[vizkit.Option("exclude", str, "BACKGROUND"), vizkit.Option("k", int, 3)],
                )
            )

    app = vizkit.make_app(entry_point_group=None, extra=[("says-what-applied", Plugin())])
    result = vizkit.run("says-what-applied", _classifier(), images=torch.rand(1, 3, 32, 32), app=app)
    assert "not_applicable" not in result.meta
    result.save(tmp_path / "out")
    document = json.loads((tmp_path / "out" / "result.json").read_text())
    assert "exclude" not in document["params"] and document["params"]["k"] == 3


def test_train_resume_compares_only_the_settings_the_schedule_uses():
    from vizkit_plugins.train.config import TrainConfig, resumable_settings, same_settings

    cosine = TrainConfig(data="d", out="o", schedule="cosine")
    saved = resumable_settings(cosine)
    assert "patience" not in saved and "min_epochs_before_decay" not in saved
    assert same_settings(saved, TrainConfig(data="d", out="o", schedule="cosine", patience=7))
    old = {**saved, "patience": 2, "min_epochs_before_decay": 0}  # written before they were left out
    assert same_settings(old, cosine)
    assert not same_settings(saved, TrainConfig(data="d", out="o", schedule="cosine", lr=0.1))
    plateau = TrainConfig(data="d", out="o")
    assert not same_settings(resumable_settings(plateau), TrainConfig(data="d", out="o", patience=7))
