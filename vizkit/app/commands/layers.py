"""``vizkit layers MODEL``: a model's layers, their types and output shapes."""

from __future__ import annotations

import json

import click
import torch

import vizkit
from vizkit.app.commands.common import current_app, model_help, model_options, pass_app
from vizkit.data.preprocess import MAX_SIZE
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.registry import App


class LayersCommand(click.Command):
    """A command whose help ends with what MODEL accepts in the registry it runs for (read when
    the help is shown: the command is built once, for any App)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """End the help with the model specs MODEL accepts in the App the command line runs for."""
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(f"MODEL: {model_help(current_app(ctx))}.")


@click.command("layers", cls=LayersCommand)
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
@pass_app
def layers_command(
    app: App,
    model_spec: str,
    weights: str | None,
    labels: str | None,
    trust_weights: bool,
    size: int | None,
    as_json: bool,
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
