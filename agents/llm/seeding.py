"""Independent random streams named by a path below one run seed.

A seeded run draws from many streams: each iteration's question draw, each EnvRunner's
probe coins, each batched generate call, each request of a call. Adding offsets to one
seed (``seed + iteration + call``) makes streams collide (call 2 of iteration 1 is call
1 of iteration 2); here every stream is ``numpy.random.SeedSequence(seed,
spawn_key=path)``, which hashes the whole path, so two different paths give unrelated
streams and the same path always gives the same one (what makes a resumed run exact).
"""

from __future__ import annotations

import numpy as np

_SEED_MASK = (1 << 63) - 1  # torch.Generator, random.Random and vLLM all take 63-bit seeds


def stream_seed(seed: int, *path: int) -> int:
    """The 63-bit seed of the stream at ``path`` below ``seed``.

    ``stream_seed(s, i)`` is the seed of iteration ``i``; ``stream_seed(that, w)`` of
    worker ``w`` in it, and so on: a child seed is itself a root for deeper streams.
    Paths of different lengths never share a stream (the spawn key's length is hashed).
    """
    if seed < 0 or any(index < 0 for index in path):
        raise ValueError(f"seeds and stream indices must be >= 0, got {seed} and {path}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=tuple(int(i) for i in path))
    return int(sequence.generate_state(1, np.uint64)[0]) & _SEED_MASK
