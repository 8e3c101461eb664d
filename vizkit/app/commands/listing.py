"""``vizkit list [analyses|models|map-methods|plugins] [--json]``: what the installed plugins registered."""

from __future__ import annotations

import json
from typing import Any

import click

from vizkit.app.commands.common import pass_app
from vizkit.framework.registry import App


@click.command("list")
@click.argument("what", required=False, type=click.Choice(["analyses", "models", "map-methods", "plugins"]))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_app
def list_command(app: App, what: str | None, as_json: bool) -> None:
    """List registered analyses, models, map methods (what `vizkit run sanity --method` takes) and
    plugins (with errors of broken ones)."""
    sections: dict[str, list[dict[str, Any]]] = {
        "analyses": [
            {"name": a.name, "description": a.description, "plugin": a.plugin}
            for a in sorted(app.analyses.values(), key=lambda a: a.name)
        ],
        "models": [
            {"name": m.name, "description": m.description, "plugin": m.plugin, "tags": list(m.tags)}
            for m in sorted(app.models.values(), key=lambda m: m.name)
        ],
        "map-methods": [
            {"name": m.name, "description": m.description, "plugin": m.plugin}
            for m in sorted(app.map_methods.values(), key=lambda m: m.name)
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
