"""``vizkit report FOLDER``: one HTML page over every result below FOLDER."""

from __future__ import annotations

from pathlib import Path

import click

from vizkit.app.commands.common import pass_app
from vizkit.framework.registry import App


@click.command("report")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@pass_app
def report_command(app: App, folder: str) -> None:
    """Write FOLDER/index.html showing every result found below FOLDER."""
    from vizkit.app.report import write_report

    path, count = write_report(Path(folder), app)  # the analyses' own views show their results
    click.echo(f"report: {count} result(s) in {path}")
