"""The retrieval contract every backend implements: batched search over passages."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class Passage(NamedTuple):
    """One corpus passage as a retriever returns it.

    ``contents`` is kept exactly as the wiki-18 corpus stores it, ``"Title"\\ntext``,
    so results can be passed on to Search-R1-compatible clients unchanged.

    A named tuple (immutable, hashable) rather than a frozen dataclass: a retriever
    builds thousands a second, and a tuple builds in about a third of the time.
    """

    id: str
    contents: str
    score: float = 0.0

    @property
    def title_line(self) -> str:
        """The first line of ``contents``, verbatim (wiki-18 keeps quotes on some titles).

        Search-R1 formats results with this raw line, quotes included.
        """
        return self.contents.split("\n", 1)[0]

    @property
    def title(self) -> str:
        """The title without the surrounding quotes wiki-18 puts on some titles."""
        line = self.title_line.strip()
        if len(line) >= 2 and line[0] == line[-1] == '"':
            return line[1:-1]
        return line

    @property
    def text(self) -> str:
        """Everything after the title line."""
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) == 2 else ""


@runtime_checkable
class Retriever(Protocol):
    """Batched top-k passage search.

    Batched by design: an RL rollout step issues one query per active trajectory, and
    answering them in one call is what keeps retrieval off the critical path.
    """

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        """Return, for each query, its ``k`` best passages, best first."""
        ...


class RetrievalError(RuntimeError):
    """A retriever could not answer (bad index, unreachable service, bad response)."""


class RetrieverUnavailableError(RetrievalError):
    """The retrieval service could not be reached; the message names its URL."""


def check_search_args(queries: list[str], k: int, max_k: int) -> None:
    """Validate the arguments of ``Retriever.search`` the same way for every backend."""
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings, not a single string")
    if not all(isinstance(query, str) for query in queries):
        raise TypeError("every query must be a string")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > max_k:
        raise ValueError(f"k={k} is larger than the number of passages in the corpus ({max_k})")
