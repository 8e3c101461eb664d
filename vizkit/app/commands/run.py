"""``vizkit run ANALYSIS``: one sub-command per registered analysis, built from its declared
options, so ``vizkit run deconvnet --help`` lists that analysis's options."""

from __future__ import annotations

import shlex
from functools import partial
from pathlib import Path
from typing import Any

import click

import vizkit
from vizkit.app.commands.common import current_app, model_help
from vizkit.data import Preprocess, ensure_device
from vizkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from vizkit.errors import UsageError
from vizkit.framework.registry import App
from vizkit.framework.results import RESULT_FILE, check_out_dir
from vizkit.toolkit.distributed import is_main_process

DEFAULT_OUT_ROOT = Path("vizkit-results")

# what every analysis's command takes; its own options follow
RUN_OPTIONS = [
    click.Option(
        ["--model"],
        help="a registered name (vizkit list models) or torchvision:<builder>, file.py:factory, package.module:factory",
    ),
    click.Option(
        ["--weights"], type=click.Path(dir_okay=False), help="state_dict file (loaded with weights_only=True)"
    ),
    click.Option(["--trust-weights"], is_flag=True, help="allow arbitrary unpickling of --weights"),
    click.Option(
        ["--labels"],
        type=click.Path(dir_okay=False),
        help="class names: one per line, wnid<TAB>name, or Caffe synset_words.txt lines",
    ),
    click.Option(["--image", "images"], multiple=True, help="input image (repeat, or list several after --image)"),
    click.Option(["--data"], help="folder of images, ImageFolder tree, or text file of image paths"),
    click.Option(["--strict"], is_flag=True, help="stop at the first unreadable --data image (default: skip it)"),
    click.Option(
        ["--out"],
        type=click.Path(file_okay=False),
        help="result folder; one that already holds a result is refused without --overwrite "
        "(default: vizkit-results/<analysis>, or the first of <analysis>-2, -3, ... that holds no result yet)",
    ),
    click.Option(["--overwrite"], is_flag=True, help="replace a result already in --out"),
    click.Option(["--device"], default="cpu", show_default=True, help="cpu or cuda"),
    click.Option(["--batch-size"], type=int, default=32, show_default=True),
    click.Option(["--seed"], type=int, default=0, show_default=True),
    click.Option(["--resize"], type=int, help="shorter side before cropping (default 256, or the model's own)"),
    click.Option(["--crop"], type=int, help="centre crop size (default 224, or the model's own)"),
    click.Option(["--mean"], help=f"normalisation mean R,G,B (default {','.join(map(str, IMAGENET_MEAN))})"),
    click.Option(["--std"], help=f"normalisation std R,G,B (default {','.join(map(str, IMAGENET_STD))})"),
    click.Option(
        ["--quiet"], is_flag=True, help="no progress output (a bar on a terminal, else a line every ~10 s on stderr)"
    ),
    click.Argument(["more_images"], nargs=-1, required=False),
]


def _floats3(text: str | None, flag: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise UsageError(f"{flag} expects three comma-separated numbers (R,G,B), not '{text}'")
    return (values[0], values[1], values[2])


def default_out(analysis: str, root: Path = DEFAULT_OUT_ROOT) -> Path:
    """Where ``vizkit run ANALYSIS`` writes without ``--out``: ``root/ANALYSIS``, or the first of
    ``root/ANALYSIS-2``, ``-3``, ... that does not hold a result yet.

    A second run therefore never collides with the first (both are kept, numbered in run order),
    and a folder an interrupted run left without ``result.json`` is the one reused, so an
    analysis's ``--resume`` finds its checkpoint there without ``--out``.

    Args:
        analysis: the analysis's name (the folder's name).
        root: the folder holding the default result folders.
    """
    candidate, number = root / analysis, 1
    while (candidate / RESULT_FILE).exists() or (candidate.exists() and not candidate.is_dir()):
        number += 1
        candidate = root / f"{analysis}-{number}"
    return candidate


def _click_option(option: vizkit.Option, app: App) -> click.Option:
    """The click option of an analysis's :class:`vizkit.Option` (a registry's names as choices)."""
    kwargs: dict[str, Any] = {
        "help": f"{option.help} ({option.range_text})" if option.range_text else option.help,
        "default": option.default,
        "show_default": option.default is not None,
    }
    if option.registry:
        kwargs["type"] = click.Choice(sorted(getattr(app, option.registry)))
    elif option.type is bool:
        kwargs.update(is_flag=True, default=bool(option.default))
    elif isinstance(option.type, tuple):  # comma-separated choices are text the option checks
        kwargs["type"] = str if option.comma_separated else click.Choice(option.type, case_sensitive=False)
    elif option.type in (int, float, str):
        kwargs["type"] = option.type
    if option.multiple:
        kwargs["multiple"] = True
        kwargs["default"] = option.default or ()
    if option.type is bool and option.default:  # on by default: a --no- form turns it off
        return click.Option([f"{option.flag}/--no-{option.flag[2:]}", option.name], **kwargs)
    return click.Option([option.flag, option.name], **kwargs)


class RunGroup(click.Group):
    """``vizkit run``: one sub-command per analysis registered by the plugins of the App the
    command line runs for (:func:`current_app`), built from its declared options."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The analyses the App's plugins register, sorted by name."""
        return sorted(current_app(ctx).analyses)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """Analysis ``name`` as a command, its options built from those the analysis declares;
        None for an unknown name."""
        app = current_app(ctx)
        analysis = app.analyses.get(name)
        if analysis is None:
            return None
        model_option = click.Option(["--model"], help=model_help(app))
        params = [model_option if p.name == "model" else p for p in RUN_OPTIONS]
        params += [_click_option(o, app) for o in analysis.options]
        return click.Command(
            name,
            params=params,
            callback=partial(_run_command, app, analysis),
            help=analysis.description,
            short_help=analysis.description,
        )

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, except that an unknown analysis is the registry's error, which lists the
        available ones."""
        app = current_app(ctx)
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in app.analyses:
            app.analysis(name)  # raises the "unknown analysis ... available: ..." error
        return super().resolve_command(ctx, args)


@click.group("run", cls=RunGroup)
def run_group() -> None:
    """Run an analysis: vizkit run ANALYSIS --model SPEC (--image FILE... | --data PATH) [options]."""


def _run_command(app: App, analysis: vizkit.Analysis, **kwargs: Any) -> None:
    images = list(kwargs.pop("images")) + list(kwargs.pop("more_images"))
    common = {
        key: kwargs.pop(key)
        for key in [
            "model",
            "weights",
            "trust_weights",
            "labels",
            "data",
            "strict",
            "out",
            "overwrite",
            "device",
            "batch_size",
            "seed",
            "resize",
            "crop",
            "mean",
            "std",
            "quiet",
        ]
    }
    if common["out"] is not None and not common["out"].strip():
        raise UsageError("--out is empty; give a folder, or omit --out for vizkit-results/<analysis>")
    out = Path(common["out"]) if common["out"] is not None else default_out(analysis.name)
    check_out_dir(out, common["overwrite"])
    device = ensure_device(common["device"])
    model = vizkit.load_model(
        common["model"] or analysis.default_model(kwargs),
        weights=common["weights"],
        labels=common["labels"],
        device=device,
        trust_weights=common["trust_weights"],
        app=app,
    )
    base = vizkit.data.preprocess_for(model)  # the model's own (zfnet-compact: 160/144), else ImageNet's
    preprocess = Preprocess(  # `is None`, not `or`: --crop 0 is refused, not read as "the default"
        resize=base.resize if common["resize"] is None else common["resize"],
        crop=base.crop if common["crop"] is None else common["crop"],
        mean=_floats3(common["mean"], "--mean") or base.mean,
        std=_floats3(common["std"], "--std") or base.std,
    )
    progress = not common["quiet"]  # a bar on a terminal, else a line every ~10 s
    try:
        result = vizkit.run(
            analysis.name,
            model,
            images=images or None,
            data=common["data"],
            strict=common["strict"],
            preprocess=preprocess,
            device=device,
            batch_size=common["batch_size"],
            seed=common["seed"],
            progress=progress,
            out=out,
            app=app,
            **kwargs,
        )
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (main turns it into the same)
        if any(option.name == "resume" for option in analysis.options):
            _say_how_to_resume(analysis.name, out, common["out"] is None, stop)
        raise
    if not is_main_process():  # under torchrun only rank 0 writes the result
        return
    result.save(out, overwrite=common["overwrite"])
    if not common["quiet"]:
        click.echo(f"{analysis.name}: wrote {out} ({result.meta.get('seconds', 0):.1f}s)")


def _say_how_to_resume(name: str, out: Path, add_out: bool, stop: KeyboardInterrupt) -> None:
    """The command that continues an interrupted run of an analysis that resumes (one with a
    ``--resume`` option): this command line, with ``--out`` (when it was left to the default)
    and ``--resume``."""
    argv = list((click.get_current_context().find_root().obj or {}).get("argv") or ["run", name, "..."])
    argv += ["--out", str(out)] if add_out else []
    argv += [] if "--resume" in argv else ["--resume"]
    why = f"{stop.args[0]} received" if stop.args and str(stop.args[0]).startswith("SIG") else "interrupted"
    click.echo(f"{name}: {why}; to continue where it stopped: {shlex.join(['vizkit', *argv])}", err=True)
