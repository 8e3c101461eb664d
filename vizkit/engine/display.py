"""How an instrumented model shows itself in a notebook: :meth:`vizkit.Instrumented._repr_html_`
draws the layers its last forward recorded as an HTML table."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vizkit.engine.recorder import Recorder

MAX_ROWS = 400  # layers listed before the rest are counted (the table scrolls)
_CELL = 'style="text-align:left;padding:1px 8px"'


def recorder_html(recorder: Recorder) -> str:
    """The layers of ``recorder``'s last forward as one HTML fragment: per layer its name (and
    alias), module type (``F.<op>`` for a functional call), output shape, whether its activation
    was kept and whether its pooling switches were recorded; above it, the model's class, whether
    the hooks are on, and what forwards record now."""
    settings = recorder.settings
    layers = settings.layers
    if layers is None:
        recording = "every layer's activation"
    elif not layers:
        recording = "no activations"
    else:
        recording = f"the activations of {len(layers)} layer{'s' * (len(layers) != 1)}"
    switches = "and pooling switches" if settings.switches else "and no pooling switches"
    active = "hooks on (inside its with block)" if recorder._handles else "hooks off (outside its with block)"
    head = (
        f"<p><strong>vizkit.Instrumented</strong> <code>{_esc(type(recorder.model).__name__)}</code>: "
        f"{active}; forwards record {recording} {switches}.</p>"
    )
    infos = recorder.layer_infos()
    if not infos:
        return f'<div class="vizkit-instrumented">{head}<p><em>no forward yet: call it on a batch, im(x)</em></p></div>'
    alias_of: dict[str, list[str]] = {}
    for alias, name in recorder.aliases.items():
        alias_of.setdefault(name, []).append(alias)
    kept = recorder._rec.acts
    columns = ["#", "layer", "type", "output shape", "activation kept", "switches"]
    rows = []
    for index, info in enumerate(infos[:MAX_ROWS]):
        name = f"<code>{_esc(info.name)}</code>" + "".join(f" ({_esc(a)})" for a in alias_of.get(info.name, []))
        shape = "[" + ", ".join(str(d) for d in info.shape) + "]" if info.shape is not None else "not a tensor"
        cells: list[Any] = [index, name, _esc(info.type), shape, _yes(info.name in kept), _yes(info.has_switches)]
        rows.append("<tr>" + "".join(f"<td {_CELL}>{cell}</td>" for cell in cells) + "</tr>")
    more = f"<p><em>and {len(infos) - MAX_ROWS} more layers</em></p>" if len(infos) > MAX_ROWS else ""
    input_shape = "" if recorder.input is None else " of an input [" + ", ".join(map(str, recorder.input.shape)) + "]"
    table = (
        f"<p>{len(infos)} layers in the last forward{input_shape}:</p>"
        '<div style="max-height:28em;overflow:auto"><table>'
        + "<tr>"
        + "".join(f"<th {_CELL}>{c}</th>" for c in columns)
        + "</tr>"
        + "".join(rows)
        + f"</table></div>{more}"
    )
    return f'<div class="vizkit-instrumented">{head}{table}</div>'


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)
