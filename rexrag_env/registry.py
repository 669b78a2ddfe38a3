"""Names resolved to builders given as ``"module:function"`` strings.

Gymnasium registers env ids with an entry point string so that ``gym.make`` can build
an env without importing every env module up front. The same here for the names users
pass as ``dataset=``, ``retriever=`` or ``llm=``: the layer that looks a name up holds
the table, the layer that defines the builder registers it (in its package
``__init__``), and no lower layer imports a higher one to resolve a name.
"""

from __future__ import annotations

import importlib
from typing import Any


class NameRegistry:
    """A table of names → ``"module:function"`` builders (plus fixed keyword arguments).

    Args:
        what: what the names name ("dataset", "model", …), for error messages.
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}

    def register(self, name: str, builder: str, **kwargs: Any) -> None:
        """Make ``name`` resolve to ``builder(**kwargs)``; re-registering replaces it."""
        module, _, function = builder.partition(":")
        if not module or not function:
            raise ValueError(f"{self.what} builder {builder!r} is not 'module:function'")
        self._entries[name] = (builder, kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def resolve(self, name: str) -> Any:
        """The object the builder string of ``name`` points at (imported on first use)."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(self.names())}")
        module, _, attribute = self._entries[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the builder of ``name`` (registered kwargs, then ``kwargs``)."""
        return self.resolve(name)(**{**self._entries[name][1], **kwargs})
