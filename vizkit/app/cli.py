"""The ``vizkit`` command line (click).

``vizkit run ANALYSIS`` has one sub-command per registered analysis, built from its declared
options, so ``vizkit run deconvnet --help`` lists that analysis's options. User mistakes end in
a one-line ``vizkit: error: ...`` and exit status 2 (1 when a run fails), never a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import click
import torch

import vizkit
from vizkit.data import Preprocess, ensure_device
from vizkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, MAX_SIZE
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.registry import App, make_app
from vizkit.framework.results import RESULT_FILE, check_out_dir
from vizkit.toolkit.distributed import is_main_process


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


def model_options(function):
    """--weights, --labels, --trust-weights: shared by every command that loads a model."""
    function = click.option(
        "--trust-weights", is_flag=True, help="allow arbitrary unpickling of --weights (only for files you trust)"
    )(function)
    function = click.option(
        "--labels",
        type=click.Path(dir_okay=False),
        help="class names: one per line, wnid<TAB>name, or Caffe synset_words.txt lines",
    )(function)
    function = click.option(
        "--weights", type=click.Path(dir_okay=False), help="state_dict file (loaded with weights_only=True)"
    )(function)
    return function


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
    click.Option(["--quiet"], is_flag=True, help="no progress output"),
    click.Argument(["more_images"], nargs=-1, required=False),
]


DEFAULT_OUT_ROOT = Path("vizkit-results")
DEBUG_ENV = "VIZKIT_DEBUG"  # set to 1: full tracebacks on stderr, for any error


def model_help(app: App) -> str:
    """What ``--model`` / ``MODEL`` accepts, from the registry: the registered names (the
    untrained ones marked) and the spec forms, so ``--help`` shows e.g. ``zfnet-compact``.

    Args:
        app: the plugin registry whose models and model sources are listed.
    """
    names = [
        f"{m.name} (untrained)" if "untrained" in m.tags else m.name
        for m in sorted(app.models.values(), key=lambda m: m.name)
    ]
    forms = [source.usage for source in app.model_sources.values()]
    listed = ", ".join(names) if names else "none"
    return f"a registered model: {listed} (details: vizkit list models); or {', '.join(forms)}"


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
    return click.Option([option.flag, option.name], **kwargs)


class RunGroup(click.Group):
    """``vizkit run``: one sub-command per analysis registered by the plugins."""

    def __init__(self, *args: Any, app: App, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.app.analyses)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        analysis = self.app.analyses.get(name)
        if analysis is None:
            return None
        model_option = click.Option(["--model"], help=model_help(self.app))
        params = [model_option if p.name == "model" else p for p in RUN_OPTIONS]
        params += [_click_option(o, self.app) for o in analysis.options]
        return click.Command(
            name,
            params=params,
            callback=partial(_run_command, self.app, analysis),
            help=analysis.description,
            short_help=analysis.description,
        )

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.app.analyses:
            self.app.analysis(name)  # raises the "unknown analysis ... available: ..." error
        return super().resolve_command(ctx, args)


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
    progress = not common["quiet"] and sys.stderr.isatty()
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


def build_cli(app: App) -> click.Group:
    """The ``vizkit`` command group for one App (plugins may add commands to it)."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(vizkit.__version__, prog_name="vizkit")
    def cli() -> None:
        """Make the inside of a convnet visible (Zeiler & Fergus analyses on any PyTorch model)."""

    @cli.command("list")
    @click.argument("what", required=False, type=click.Choice(["analyses", "models", "plugins"]))
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def list_command(what: str | None, as_json: bool) -> None:
        """List registered analyses, models and plugins (with errors of broken ones)."""
        sections: dict[str, list[dict[str, Any]]] = {
            "analyses": [
                {"name": a.name, "description": a.description, "plugin": a.plugin}
                for a in sorted(app.analyses.values(), key=lambda a: a.name)
            ],
            "models": [
                {"name": m.name, "description": m.description, "plugin": m.plugin, "tags": list(m.tags)}
                for m in sorted(app.models.values(), key=lambda m: m.name)
            ],
            "plugins": [
                {
                    "name": s.name,
                    "source": s.source,
                    "status": "disabled" if s.disabled else ("error" if s.error else "ok"),
                    "error": s.error,
                    "builtin": s.builtin,
                    "distribution": s.distribution,
                }
                for s in app.statuses
            ],
        }
        chosen = {what: sections[what]} if what else sections
        if as_json:
            click.echo(json.dumps(chosen if not what else chosen[what], indent=2))
            return
        usages = [source.usage for source in app.model_sources.values()]
        names = [str(row["name"]) for rows in chosen.values() for row in rows] + usages
        column = max([20, *(len(name) + 1 for name in names)])  # every name stands apart from its text
        for title, rows in chosen.items():
            if not what:
                click.echo(f"{title}:")
            for row in rows:
                if title == "plugins":
                    detail = row["error"] if row["error"] else row["status"]
                    click.echo(f"  {row['name']:<{column}} {detail}  ({row['source']})")
                else:
                    click.echo(f"  {row['name']:<{column}} {row['description']}")
            if title == "models":
                for source in app.model_sources.values():
                    click.echo(f"  {source.usage:<{column}} {source.description}")

    @cli.command("layers", epilog=f"MODEL: {model_help(app)}.")
    @click.argument("model_spec", metavar="MODEL")
    @model_options
    @click.option(
        "--size",
        type=int,
        default=None,
        help="input size for the shapes (default: the model's own preprocessing crop: 144 for zfnet-compact, "
        "224 for ImageNet models)",
    )
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def layers_command(
        model_spec: str, weights: str | None, labels: str | None, trust_weights: bool, size: int | None, as_json: bool
    ) -> None:
        """List MODEL's layers: names, types and output shapes for the model's own input size (pools marked)."""
        model = vizkit.load_model(model_spec, weights=weights, labels=labels, trust_weights=trust_weights, app=app)
        preprocess = vizkit.data.preprocess_for(model)
        where = (
            "--size"
            if size is not None
            else f"the model's preprocessing: resize {preprocess.resize}, crop {preprocess.crop}"
        )
        size = preprocess.crop if size is None else size
        if size < 16:
            raise UsageError(f"--size {size} is too small")
        if size > MAX_SIZE:  # a forward at 100000x100000 only ends in the allocator's error
            raise UsageError(f"--size must be at most {MAX_SIZE}, not {size}")
        with vizkit.instrument(model, layers=None, check_finite=False) as im, torch.no_grad():  # shapes only
            try:
                im(torch.zeros(1, 3, size, size))
            except VizkitError:
                raise
            except Exception as error:
                raise VizkitError(f"{model_spec} cannot run on a {size}x{size} input: {error}") from None
            infos = im.layer_infos()
        if as_json:
            click.echo(
                json.dumps(
                    [
                        {
                            "name": i.name,
                            "type": i.type,
                            "functional": i.functional,
                            "shape": list(i.shape[1:]) if i.shape else None,
                            "switches": i.has_switches,
                        }
                        for i in infos
                    ],
                    indent=2,
                )
            )
            return
        width = max(len(i.name) for i in infos) + 2
        click.echo(f"{model_spec}: output shapes for a 3x{size}x{size} input ({where})")
        click.echo(f"{'layer':<{width}}{'type':<24}{'output':<18}")
        for info in infos:
            shape = "x".join(str(d) for d in info.shape[1:]) if info.shape else "(not a tensor)"
            mark = "  switches" if info.has_switches else ""
            click.echo(f"{info.name:<{width}}{info.type:<24}{shape:<18}{mark}")

    @cli.group("run", cls=RunGroup, app=app)
    def run_group() -> None:
        """Run an analysis: vizkit run ANALYSIS --model SPEC (--image FILE... | --data PATH) [options]."""

    @cli.command("report")
    @click.argument("folder", type=click.Path(file_okay=False, exists=True))
    def report_command(folder: str) -> None:
        """Write FOLDER/index.html showing every result found below FOLDER."""
        from vizkit.app.report import write_report

        path, count = write_report(Path(folder), app)  # the analyses' own views show their results
        click.echo(f"report: {count} result(s) in {path}")

    @cli.command("demo")
    @click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="vizkit-demo",
        show_default=True,
        help="the demo's folder; a rerun replaces the demo's own results there",
    )
    @click.option(
        "--data",
        help="your images: a folder, ImageFolder tree or text file of paths (default: `vizkit samples`)",
    )
    @click.option("--quick", is_flag=True, help="fewer images and lighter settings (well under a minute)")
    @click.option("--overwrite", is_flag=True, help="also write into an --out that the demo did not make")
    def demo_command(out: str, data: str | None, quick: bool, overwrite: bool) -> None:
        """Run every analysis that declares a demo on the bundled zfnet-compact, then write the report.

        Each analysis's result goes to OUT/<analysis>; a failing one is reported and the others
        still run (the exit status is then 1). Evolution needs a training run: ./vizkit-train or
        $VIZKIT_TRAIN_RUN.
        """
        from vizkit.app.demo import run_demo

        if not out.strip():
            raise UsageError("--out is empty; give the demo's folder (default: vizkit-demo)")
        summary = run_demo(app, Path(out), data, quick, overwrite, echo=click.echo)
        if summary.failed:
            raise VizkitError(f"demo: {len(summary.failed)} analysis(es) failed: {', '.join(summary.failed)}")

    @cli.command("samples")
    @click.option("--per-class", type=int, default=2, show_default=True, help="images per class")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output, with each image's class")
    @click.option(
        "--download",
        is_flag=True,
        help="first fetch Imagenette's validation images into vizkit's cache (once; about 94 MB)",
    )
    def samples_command(per_class: int, as_json: bool, download: bool) -> None:
        """Print real images of the bundled model's classes, one path a line (for --image / --data).

        Looked for in $VIZKIT_SAMPLES, then $VIZKIT_SHARED/data/imagenette/val, then the images
        `--download` fetched into $VIZKIT_CACHE/samples (default ~/.cache/vizkit/samples); else
        matplotlib's sample photograph, with a note on stderr. Nothing is copied into the package.
        """
        from vizkit.app.demo import FALLBACK_HINT, class_name, find_samples
        from vizkit.app.downloads import download_samples

        if download:
            download_samples(echo=lambda line: click.echo(f"vizkit: {line}", err=True))
        found = find_samples(per_class)
        if found.fallback:
            click.echo(f"vizkit: note: {FALLBACK_HINT}", err=True)
        if as_json:
            images = [{"path": str(p), "class": class_name(f), "folder": f} for p, f in zip(found.paths, found.folders)]
            click.echo(json.dumps({"source": found.source, "fallback": found.fallback, "images": images}, indent=2))
            return
        for path in found.paths:
            click.echo(str(path))

    app.add_commands(cli)  # the plugins' commands; vizkit's own names win clashes
    return cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vizkit`` console script; returns the exit status.

    Every error ends in one line on stderr: ``vizkit: error: ...``, status 2 for a usage
    mistake, 1 for a failed run, 130 when interrupted. An unexpected exception (a bug) names
    the plugin and its analysis, model or rule it came from, or says it is a bug in vizkit
    (:meth:`vizkit.framework.App.explain`). ``VIZKIT_DEBUG=1`` prints the full traceback before that line,
    for any error. Plugin name clashes are warned about on stderr, one line each.

    Args:
        argv: the arguments after ``vizkit``; None: ``sys.argv[1:]``.
    """
    args = list(argv if argv is not None else sys.argv[1:])
    app: App | None = None
    try:
        app = make_app()
        cli = build_cli(app)
        for warning in app.warnings:
            click.echo(f"vizkit: warning: {warning}", err=True)
        with vizkit.toolkit.sigterm_as_interrupt():  # a scheduler's or `timeout`'s SIGTERM saves work as Ctrl-C does
            cli.main(args=args, prog_name="vizkit", standalone_mode=False, obj={"argv": args, "app": app})
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.exceptions.NoArgsIsHelpError as error:  # `vizkit` or `vizkit run` alone: the help
        click.echo(error.ctx.get_help())
        return 0
    except click.ClickException as error:  # click's own checks (no such option, a bad choice or type)
        _debug_traceback(error)
        command = getattr(getattr(error, "ctx", None), "command_path", None)
        hint = f" (see '{command} --help')" if isinstance(error, click.UsageError) and command else ""
        click.echo(f"vizkit: error: {' '.join(error.format_message().split())}{hint}", err=True)
        return error.exit_code
    except click.exceptions.Abort as error:
        _debug_traceback(error)
        click.echo("vizkit: aborted", err=True)
        return 130
    except KeyboardInterrupt as error:
        _debug_traceback(error)
        click.echo("vizkit: interrupted", err=True)
        return 130
    except UsageError as error:
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_one_line(error)}", err=True)
        return 2
    except VizkitError as error:
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_one_line(error)}", err=True)
        return 1
    except Exception as error:  # a bug: in a plugin or in vizkit; one line, not a traceback
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_explain(error, app, args)}", err=True)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def debug_enabled() -> bool:
    """Whether ``VIZKIT_DEBUG`` asks for full tracebacks (any value but empty, 0, false, no, off)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _debug_traceback(error: BaseException) -> None:
    if debug_enabled():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


def _explain(error: Exception, app: App | None, args: list[str]) -> str:
    """The one line for an unexpected exception (see :meth:`vizkit.framework.App.explain`)."""
    if app is None:  # the plugin registry itself failed to build
        return f"unexpected {type(error).__name__}: {_one_line(error)} (a bug in vizkit: please report it with the traceback {DEBUG_ENV}=1 shows)"
    running = args[1] if len(args) > 1 and args[0] == "run" and args[1] in app.analyses else None
    return app.explain(error, running)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
