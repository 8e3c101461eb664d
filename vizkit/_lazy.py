"""Public namespaces whose names are imported on first use (PEP 562).

``vizkit`` and its public sub-namespaces (``vizkit.engine``, ``vizkit.toolkit``, ...) each list
their names in a table ``{public name: (module, attribute)}``; :func:`attach` turns the table into
the package's ``__getattr__``/``__dir__``, so ``import vizkit`` and the command line stay light
(no torchvision or matplotlib until a name that needs them is used), while ``vizkit.engine.project``
and ``from vizkit.toolkit import RunningTopK`` work as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

Table = Mapping[str, tuple[str, "str | None"]]


def attach(
    package: str, table: Table, eager: Mapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names are in ``table``.

    Args:
        package: the package's ``__name__`` (for the error message).
        table: public name -> (module that defines it, attribute there; None: the module itself).
        eager: the package's ``globals()``, whose names are listed by ``__dir__`` too.
    """

    def __getattr__(name: str) -> Any:
        try:
            module_name, attribute = table[name]
        except KeyError:
            raise AttributeError(f"module '{package}' has no attribute '{name}'") from None
        module = importlib.import_module(module_name)
        # not cached in the package: a value kept on first use would outlive a test's monkeypatch
        # of the defining module if the first use fell inside it (a lookup is a dict hit anyway)
        return module if attribute is None else getattr(module, attribute)

    def __dir__() -> list[str]:
        return sorted(set(eager) | set(table))

    return __getattr__, __dir__
