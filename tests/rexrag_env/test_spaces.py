"""UnicodeText: any str is in the space, and survives AsyncVectorEnv's shared memory."""

import copy

import pytest
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

from rexrag_env.spaces import UnicodeText


def test_any_string_up_to_the_bound_is_in_the_space():
    space = UnicodeText(5)
    assert space.contains("Čü😀\x00\ud800") and space.contains("")
    assert not space.contains("x" * 6) and not space.contains(b"bytes")


def test_shared_memory_round_trips_unicode_through_a_live_view():
    space = UnicodeText(4)
    memory = create_shared_memory(space, n=3)
    view = read_from_shared_memory(space, memory, n=3)
    assert copy.deepcopy(view) == ("", "", "")
    # worst case UTF-8: 4 characters of 4 bytes fill a slot; lone surrogates survive
    write_to_shared_memory(space, 0, "😀😀😀😀", memory)
    write_to_shared_memory(space, 2, "Č\ud800x", memory)
    assert copy.deepcopy(view) == ("😀😀😀😀", "", "Č\ud800x")  # read after the writes
    write_to_shared_memory(space, 0, "a", memory)
    assert view[0] == "a" and view[1:] == ("", "Č\ud800x") and len(view) == 3
    with pytest.raises(ValueError, match="env 1 returned an observation outside UnicodeText"):
        write_to_shared_memory(space, 1, "abcde", memory)
