from rexrag_env.retrieval.base import Passage
from rexrag_env.retrieval.prefetch import PrefetchingRetriever


class CountingRetriever:
    def __init__(self):
        self.calls = []

    def search(self, queries, k):
        self.calls.append((list(queries), k))
        return [[Passage(f"{q}-{i}", f"T\n{q}") for i in range(k)] for q in queries]


def test_prefetched_results_are_served_once_then_fall_through():
    backend = CountingRetriever()
    retriever = PrefetchingRetriever(backend)
    retriever.prefetch(["a", "b", "a"], 2)
    assert backend.calls == [(["a", "b", "a"], 2)]
    assert [p.id for p in retriever.search(["a"], 2)[0]] == ["a-0", "a-1"]
    assert retriever.search(["b", "a"], 2)[1][0].id == "a-0"
    assert len(backend.calls) == 1  # all three served from the batch
    retriever.search(["a"], 2)  # nothing left for "a": goes to the backend
    retriever.search(["b"], 3)  # another k is another query
    assert backend.calls[1:] == [(["a"], 2), (["b"], 3)]
    retriever.prefetch([], 3)
    assert len(backend.calls) == 3
