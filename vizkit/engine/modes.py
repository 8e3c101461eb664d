"""Torch function modes taken off torch's mode stack in any order.

The recorder intercepts torch calls with a ``TorchFunctionMode``; several instrumented models may
be active at once, and they need not be closed in the order they were opened.
"""

from __future__ import annotations

from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode, _push_mode


def exit_mode(mode: TorchFunctionMode) -> None:
    """Take ``mode`` off torch's function-mode stack, wherever it is. ``mode.__exit__`` pops the
    top one: when instrumented models are closed out of order (``a`` entered, ``b`` entered,
    ``a`` closed), that is ``b``'s, which would then record no switches and project plain
    gradients instead of the rule's, silently, while ``a``'s stayed on for good."""
    if mode not in _get_current_function_mode_stack():
        return
    above: list[TorchFunctionMode] = []
    while (top := _pop_mode()) is not mode:
        above.append(top)
    for other in reversed(above):
        _push_mode(other)
