"""Memory-light random access to a wiki-18 style JSONL corpus.

wiki-18 is 21M lines and about 13 GB. Loading it as 21M Python dicts costs tens of GB,
so the corpus is memory-mapped and only a NumPy array of line offsets (8 bytes a
line, cached on disk) stays resident; a passage is decoded from JSON when it is asked
for, and the most recently used decoded rows are kept in a bounded cache. Gzipped
corpora (like the one shipped with the package) are decompressed, and parquet corpora
(FlashRAG's on the Hugging Face hub) converted to JSONL, once into the cache.
"""

from __future__ import annotations

import functools
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
#: Decoded rows a :class:`Corpus` keeps by default: the whole shipped corpus (23k rows);
#: for wiki-18 (21M rows) the most recently used ones, about 1 KB each (~32 MB).
DEFAULT_CACHE_SIZE = 1 << 15


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


def _converted_parquet(path: Path) -> Path:
    """The JSONL behind a parquet corpus, written once into the cache a batch of rows at
    a time (a 21M-row corpus never sits in memory)."""
    import pyarrow
    import pyarrow.parquet

    target = cache_dir() / "corpora" / f"{path.stem}-{file_fingerprint(path)}"

    def convert(tmp: Path) -> None:
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as sink:
            for batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=1 << 16):
                for record in batch.to_pylist():
                    sink.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    try:
        build_once(target, convert)
    except (OSError, pyarrow.ArrowException) as error:
        raise CorpusFormatError(
            f"corpus file {path}: not a readable parquet file ({error})"
        ) from error
    return target / "corpus.jsonl"


#: Corpus formats read through a JSONL copy in the cache: suffix -> converter.
_CONVERTED = {".gz": _decompressed, ".parquet": _converted_parquet}


def contents_of(record: dict) -> str | None:
    """``"Title"\\ntext`` of a record in wiki-18 (``contents``), title/text or text-only
    layout (a passage without a title: its text is the contents), else None."""
    if isinstance(record.get("contents"), str):
        return record["contents"]
    if isinstance(record.get("title"), str) and isinstance(record.get("text"), str):
        return f'"{record["title"]}"\n{record["text"]}'
    if isinstance(record.get("text"), str):
        return record["text"]
    return None


class Corpus(Sequence[Passage]):
    """A JSONL passage corpus: one ``{"id": …, "contents": "\\"Title\\"\\ntext"}`` per line.

    ``corpus[i]`` is the i-th non-blank line as a :class:`Passage`. Records without an
    ``id`` get their row number as id. Records in ``{"title", "text"}`` layout are
    accepted too and rendered as wiki-18 ``contents``; ``{"text"}`` alone is the contents.

    Args:
        path: the JSONL file, plain or gzipped, or a parquet file with the same columns.
        cache_size: how many decoded rows to keep (least recently used go first; 0 keeps
            none). Retrieval returns the same rows over and over (a GRPO group searches
            the same text several times, gold paragraphs come back every epoch), and
            decoding a query's three passages from JSON takes nearly as long as BM25
            takes to score it, so a row is decoded once while it stays in use. Memory
            stays bounded whatever the corpus size.
    """

    def __init__(self, path: str | Path, cache_size: int = DEFAULT_CACHE_SIZE):
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"corpus file {source} does not exist")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be a non-negative integer, got {cache_size!r}")
        self.source = source
        self.cache_size = cache_size
        convert = _CONVERTED.get(source.suffix)
        self.path = convert(source) if convert else source
        # A plain ndarray over the same memory map: np.memmap's own indexing costs a
        # few microseconds a row, a quarter of decoding one.
        self._spans = np.asarray(_cached_line_spans(self.path))
        if len(self._spans) == 0:
            raise CorpusFormatError(f"corpus file {source} has no passages")
        with self.path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._cached_record = functools.lru_cache(maxsize=cache_size)(self._record)

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index: int) -> Passage:  # type: ignore[override]
        return self.passage(index)

    def passage(self, index: int, score: float = 0.0) -> Passage:
        """Row ``index`` (negative counts from the end); ``score`` is attached for retriever
        results."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"passage index {index} out of range for {len(self)} passages")
        return Passage(*self._cached_record(index % len(self)), float(score))

    def passages(self, indices: Sequence[int], scores: Sequence[float]) -> list[Passage]:
        """Several rows at once (negative counts from the end), each with its retrieval
        score (lists or 1-D arrays)."""
        rows, values = np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=float)
        if rows.shape != values.shape or rows.ndim != 1:
            raise ValueError(
                f"passages needs one score per index, got shapes {rows.shape} and {values.shape}"
            )
        return self.ranked_passages(rows[None], values[None])[0]

    def ranked_passages(self, rows: np.ndarray, scores: np.ndarray) -> list[list[Passage]]:
        """A retriever's ``[queries, k]`` top-k rows and scores as one passage list per
        query (negative rows count from the end).

        One call per batch, flat: converting the arrays to Python numbers in one go and
        building the passages in one pass is most of what it costs once the rows are
        decoded.
        """
        rows, scores = np.asarray(rows), np.asarray(scores)
        if rows.shape != scores.shape or rows.ndim != 2:
            raise ValueError(
                f"ranked_passages needs [queries, k] rows and scores of one shape, got "
                f"{rows.shape} and {scores.shape}"
            )
        size = len(self)
        if rows.size and not (-size <= rows.min() and rows.max() < size):
            bad = rows.min() if rows.min() < -size else rows.max()
            raise IndexError(f"passage index {bad} out of range for {size} passages")
        if rows.size and rows.min() < 0:
            rows = np.where(rows < 0, rows + size, rows)
        # Flat, then cut into rows of k: the fewest Python steps a passage.
        # tuple.__new__ on (id, contents, score): a third faster than calling the
        # NamedTuple, whose __new__ is Python code.
        records = map(self._cached_record, rows.ravel().tolist())
        new = tuple.__new__
        flat = [
            new(Passage, (*record, score))
            for record, score in zip(records, scores.ravel().tolist(), strict=True)
        ]
        k = rows.shape[1]
        if k == 0:
            return [[] for _ in rows]
        return [flat[start : start + k] for start in range(0, len(flat), k)]

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses, maximum and current size of the decoded-row cache."""
        return self._cached_record.cache_info()

    def iter_contents(self) -> Iterator[str]:
        """Every passage's ``contents`` in row order (for index building); validates each line.

        Reads past the cache: a full pass would only evict the rows retrieval is using.
        """
        for row in range(len(self)):
            yield self._record(row)[1]

    def _record(self, row: int) -> tuple[str, str]:
        """Decode and validate row ``row`` (in range, non-negative): its id and contents."""
        start, end = self._spans[row].tolist()
        try:
            record = json.loads(self._map[start:end])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorpusFormatError(f"{self._where(start)} is not JSON ({error})") from error
        if not isinstance(record, dict):
            raise CorpusFormatError(f"{self._where(start)} is not a JSON object")
        contents = contents_of(record)
        if contents is None:
            raise CorpusFormatError(
                f'{self._where(start)} needs a string "contents" field (or "text")'
            )
        return str(record.get("id", row)), contents

    def _where(self, byte_offset: int) -> str:
        line_number = self._map[:byte_offset].count(b"\n") + 1
        return f"corpus file {self.source}: line {line_number}"

    def __reduce__(self):
        # An mmap cannot be pickled; a copy sent to a Ray worker reopens the file there.
        return (Corpus, (str(self.source), self.cache_size))

    def __repr__(self) -> str:
        return f"Corpus({str(self.source)!r}, passages={len(self)})"
