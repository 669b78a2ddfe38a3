"""A Gymnasium text space for real text, and its shared-memory layout for ``AsyncVectorEnv``.

``gymnasium.spaces.Text`` only contains strings drawn from its ``charset``; real
questions and Wikipedia passages use all of Unicode, and enumerating it as a charset
would cost hundreds of MB. :class:`UnicodeText` contains every ``str`` up to
``max_length`` characters and samples from printable ASCII.

``AsyncVectorEnv`` passes observations through shared memory, and Gymnasium's layout
for ``Text`` stores one charset index per character: a character outside the charset
is a ``KeyError``, and it decodes the buffer once, so every later observation would
be the first one again. :class:`UnicodeText` registers its own layout instead: per env,
the observation's UTF-8 bytes behind their length, read through a live view.
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

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


# Shared memory: one slot per env, an 8-byte little-endian byte count, then the text
# as UTF-8 (lone surrogates kept, so any str round-trips). A slot holds any string of
# the space: UTF-8 needs at most 4 bytes per character, so a slot is 4 bytes per
# character of max_length, as Gymnasium's int32-per-character Text layout (4 MB per
# env at MAX_TEXT_CHARS; shared_memory=False in AsyncVectorEnv's vector_kwargs avoids it).
_HEADER_BYTES = 8
_ENCODING, _ERRORS = "utf-8", "surrogatepass"


def _slot_bytes(space: UnicodeText) -> int:
    return _HEADER_BYTES + 4 * space.max_length


def _slots(space: UnicodeText, shared_memory) -> np.ndarray:
    """The shared buffer as ``[n, slot bytes]`` uint8, a view (no copy)."""
    return np.frombuffer(shared_memory.get_obj(), dtype=np.uint8).reshape(-1, _slot_bytes(space))


class SharedTexts(Sequence):
    """The texts of ``n`` envs in shared memory, decoded when read.

    A live view, as ``np.frombuffer`` is for numeric spaces: ``AsyncVectorEnv`` makes it
    once and returns ``deepcopy`` of it after every step, which is a tuple of the
    current strings.
    """

    def __init__(self, slots: np.ndarray):
        self._slots = slots  # [n, 8 + capacity] uint8

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        slot = self._slots[index]
        size = int.from_bytes(slot[:_HEADER_BYTES].tobytes(), "little")
        return slot[_HEADER_BYTES : _HEADER_BYTES + size].tobytes().decode(_ENCODING, _ERRORS)

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@create_shared_memory.register(UnicodeText)
def _create_unicode_text_shared_memory(space: UnicodeText, n: int = 1, ctx=mp):
    return ctx.Array("B", n * _slot_bytes(space))


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text_from_shared_memory(
    space: UnicodeText, shared_memory, n: int = 1
) -> SharedTexts:
    return SharedTexts(_slots(space, shared_memory)[:n])


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_text_to_shared_memory(
    space: UnicodeText, index: int, value: str, shared_memory
) -> None:
    if not space.contains(value):
        got = f"a str of {len(value)} characters" if isinstance(value, str) else type(value)
        raise ValueError(f"env {index} returned an observation outside {space}: {got}")
    data = value.encode(_ENCODING, _ERRORS)
    slot = _slots(space, shared_memory)[index]
    slot[:_HEADER_BYTES] = np.frombuffer(len(data).to_bytes(_HEADER_BYTES, "little"), np.uint8)
    slot[_HEADER_BYTES : _HEADER_BYTES + len(data)] = np.frombuffer(data, np.uint8)
