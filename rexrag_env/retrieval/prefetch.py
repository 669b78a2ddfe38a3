"""Answer many environments' searches with one batched retriever call.

Each ``SearchQAEnv`` asks its retriever for one query per step. A rollout worker that
steps many environments per turn knows all their queries first, so it calls
:meth:`PrefetchingRetriever.prefetch` once with all of them; the environments' own
``search`` calls are then served from those results. Queries nobody prefetched fall
through to the backend, so the wrapper never changes what an environment sees.
"""

from __future__ import annotations

from collections import defaultdict

from rexrag_env.retrieval.base import Passage, Retriever


class PrefetchingRetriever:
    """A :class:`Retriever` wrapper with a one-shot result store filled in batches."""

    def __init__(self, backend: Retriever):
        self.backend = backend
        self._ready: dict[tuple[str, int], list[list[Passage]]] = defaultdict(list)

    @property
    def corpus(self):
        return getattr(self.backend, "corpus", None)

    def prefetch(self, queries: list[str], k: int) -> None:
        """Search all ``queries`` in one backend call and keep each result for one ``search``."""
        if not queries:
            return
        for query, passages in zip(queries, self.backend.search(list(queries), k), strict=True):
            self._ready[(query, k)].append(passages)

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        results: list[list[Passage] | None] = [None] * len(queries)
        missing = []
        for position, query in enumerate(queries):
            stored = self._ready.get((query, k))
            if stored:
                results[position] = stored.pop()
            else:
                missing.append(position)
        if missing:
            fetched = self.backend.search([queries[p] for p in missing], k)
            for position, passages in zip(missing, fetched, strict=True):
                results[position] = passages
        return results  # type: ignore[return-value]

    def clear(self) -> None:
        """Drop prefetched results that no environment asked for."""
        self._ready.clear()
