"""A Gymnasium text space for real text.

``gymnasium.spaces.Text`` only contains strings drawn from its ``charset``; real
questions and Wikipedia passages use all of Unicode, and enumerating it as a charset
would cost hundreds of MB. :class:`UnicodeText` contains every ``str`` up to
``max_length`` characters and samples from printable ASCII.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

#: Upper bound of the text spaces: far above a turn of generation (500 tokens) or an
#: observation (top-k passages), and still a bound.
MAX_TEXT_CHARS = 1_000_000


class UnicodeText(Text):
    """Any Python string of ``min_length`` to ``max_length`` characters."""

    def __init__(self, max_length: int = MAX_TEXT_CHARS, *, min_length: int = 0, seed: Any = None):
        super().__init__(max_length, min_length=min_length, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"
