"""Random streams named by paths below a run seed (agents.llm.seeding)."""

import itertools

import pytest

from agents.llm.seeding import stream_seed


def test_every_path_is_its_own_stream_and_the_same_path_is_the_same_stream():
    paths = [
        path
        for length in range(4)
        for path in itertools.product(range(4), repeat=length)  # (), (0,), (0, 0), …
    ]
    seeds = [stream_seed(7, *path) for path in paths]
    assert len(set(seeds)) == len(paths)  # (1,) ≠ (1, 0) ≠ (0, 1) ≠ (): lengths are hashed
    assert seeds == [stream_seed(7, *path) for path in paths]
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_turn_k_plus_1_of_iteration_i_is_not_turn_k_of_iteration_i_plus_1():
    """The collision of ``seed + iteration + call`` (and of ``+ 7919 · worker``)."""
    call = {
        (i, w, k): stream_seed(stream_seed(stream_seed(0, i), w), k)
        for i in range(3)
        for w in range(3)
        for k in range(3)
    }
    assert len(set(call.values())) == len(call)
    assert call[(0, 0, 1)] != call[(1, 0, 0)]


def test_negative_seeds_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        stream_seed(-1)
    with pytest.raises(ValueError, match=">= 0"):
        stream_seed(0, -2)
