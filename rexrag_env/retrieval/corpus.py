"""Memory-light random access to a wiki-18 style JSONL corpus.

wiki-18 is 21M lines and about 13 GB. Loading it as 21M Python dicts costs tens of GB,
so the corpus is memory-mapped and only a NumPy array of line offsets (8 bytes a
line, cached on disk) stays resident; a passage is decoded from JSON when it is asked
for. Gzipped corpora (like the one shipped with the package) are decompressed once
into the cache.
"""

from __future__ import annotations

import gzip
import json
import mmap
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rexrag_env.cache import build_once, cache_dir, file_fingerprint
from rexrag_env.retrieval.base import Passage

_SCAN_CHUNK_BYTES = 64 << 20


class CorpusFormatError(ValueError):
    """A corpus line is not a valid passage record; the message names file and line."""


def _scan_line_spans(path: Path) -> np.ndarray:
    """``[n, 2]`` int64 array of (start, end) byte offsets of the non-blank lines."""
    size = path.stat().st_size
    newlines = []
    with path.open("rb") as handle:
        base = 0
        while chunk := handle.read(_SCAN_CHUNK_BYTES):
            newlines.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + base)
            base += len(chunk)
    ends = np.concatenate([*newlines, np.array([size], dtype=np.int64)]).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    spans = np.stack([starts, ends], axis=1)
    return spans[
        spans[:, 1] > spans[:, 0]
    ]  # drop empty lines (incl. the one after a final newline)


def _cached_line_spans(path: Path) -> np.ndarray:
    target = cache_dir() / "offsets" / f"{path.stem}-{file_fingerprint(path)}"
    build_once(target, lambda tmp: np.save(tmp / "spans.npy", _scan_line_spans(path)))
    return np.load(target / "spans.npy", mmap_mode="r")


def _decompressed(path: Path) -> Path:
    """The plain JSONL behind a ``.gz`` corpus, decompressed once into the cache."""
    target = cache_dir() / "corpora" / f"{path.name.removesuffix('.gz')}-{file_fingerprint(path)}"

    def decompress(tmp: Path) -> None:
        with gzip.open(path, "rb") as source, (tmp / "corpus.jsonl").open("wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)

    try:
        build_once(target, decompress)
    except (OSError, EOFError) as error:
        raise CorpusFormatError(f"corpus file {path}: cannot decompress ({error})") from error
    return target / "corpus.jsonl"


def contents_of(record: dict) -> str | None:
    """``"Title"\\ntext`` of a record in wiki-18 (``contents``) or title/text layout, else None."""
    if isinstance(record.get("contents"), str):
        return record["contents"]
    if isinstance(record.get("title"), str) and isinstance(record.get("text"), str):
        return f'"{record["title"]}"\n{record["text"]}'
    return None


class Corpus(Sequence[Passage]):
    """A JSONL passage corpus: one ``{"id": …, "contents": "\\"Title\\"\\ntext"}`` per line.

    ``corpus[i]`` is the i-th non-blank line as a :class:`Passage`. Records without an
    ``id`` get their row number as id. Records in ``{"title", "text"}`` layout are
    accepted too and rendered as wiki-18 ``contents``.
    """

    def __init__(self, path: str | Path):
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"corpus file {source} does not exist")
        self.source = source
        self.path = _decompressed(source) if source.suffix == ".gz" else source
        self._spans = _cached_line_spans(self.path)
        if len(self._spans) == 0:
            raise CorpusFormatError(f"corpus file {source} has no passages")
        with self.path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index: int) -> Passage:  # type: ignore[override]
        return self.passage(index)

    def passage(self, index: int, score: float = 0.0) -> Passage:
        """Decode row ``index``; ``score`` is attached for retriever results."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"passage index {index} out of range for {len(self)} passages")
        start, end = (int(offset) for offset in self._spans[index])
        raw = self._map[start:end]
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorpusFormatError(f"{self._where(start)} is not JSON ({error})") from error
        if not isinstance(record, dict):
            raise CorpusFormatError(f"{self._where(start)} is not a JSON object")
        contents = contents_of(record)
        if contents is None:
            raise CorpusFormatError(
                f'{self._where(start)} needs a string "contents" field (or "title" and "text")'
            )
        return Passage(str(record.get("id", index % len(self))), contents, float(score))

    def passages(self, indices: Sequence[int], scores: Sequence[float]) -> list[Passage]:
        """Several rows at once, each with its retrieval score."""
        return [self.passage(int(i), float(s)) for i, s in zip(indices, scores, strict=True)]

    def iter_contents(self) -> Iterator[str]:
        """Every passage's ``contents`` in row order (for index building); validates each line."""
        for index in range(len(self)):
            yield self.passage(index).contents

    def _where(self, byte_offset: int) -> str:
        line_number = self._map[:byte_offset].count(b"\n") + 1
        return f"corpus file {self.source}: line {line_number}"

    def __reduce__(self):
        # An mmap cannot be pickled; a copy sent to a Ray worker reopens the file there.
        return (Corpus, (str(self.source),))

    def __repr__(self) -> str:
        return f"Corpus({str(self.source)!r}, passages={len(self)})"
