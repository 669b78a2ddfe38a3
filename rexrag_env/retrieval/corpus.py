"""Memory-light random access to a wiki-18 style passage corpus.

wiki-18 is 21M lines and about 13 GB. Loading it as 21M Python dicts costs tens of GB,
so the corpus is converted once, on first use, into a passage store in the cache: ids
and contents as UTF-8 blobs, memory-mapped, and their row offsets. A row is then two
slices and two UTF-8 decodes (~1.4-2 µs with its Passage built), not a JSON parse (5-12
µs; a query's three passages took nearly as long as its BM25 scoring), from the
first search on, without a decoded-row cache to warm or to bound.
The conversion reads the whole file once and validates every record, so a malformed
line is reported, with its file and line number, before any training starts rather
than when a search first returns it. JSONL (plain or gzipped) and parquet corpora
(FlashRAG's on the Hugging Face hub) are read as they stream, never held in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import mmap
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rexrag_env.cache import build_once, cache_dir, file_fingerprint
from rexrag_env.retrieval.base import Passage

#: Bumped whenever the store's layout changes: stores are cached under it.
STORE_VERSION = 1
#: The store's two columns: ``<name>.bin`` (the rows' UTF-8, concatenated) and
#: ``<name>.npy`` (``[rows + 1]`` int64 byte offsets into it).
_COLUMNS = ("ids", "contents")


class CorpusFormatError(ValueError):
    """A corpus line is not a valid passage record; the message names file and line."""


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


def _jsonl_records(path: Path, handle: io.BufferedIOBase) -> Iterator[tuple[str, object]]:
    """``(where, record)`` per non-blank line of a JSONL stream; ``where`` names file and
    line for error messages."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"corpus file {path}: line {number}"
        try:
            yield where, json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorpusFormatError(f"{where} is not JSON ({error})") from error


def _read_jsonl(path: Path) -> Iterator[tuple[str, object]]:
    with path.open("rb") as handle:
        yield from _jsonl_records(path, handle)


def _read_gzipped_jsonl(path: Path) -> Iterator[tuple[str, object]]:
    try:
        with gzip.open(path, "rb") as handle:
            yield from _jsonl_records(path, handle)
    except (OSError, EOFError) as error:
        raise CorpusFormatError(f"corpus file {path}: cannot decompress ({error})") from error


def _read_parquet(path: Path) -> Iterator[tuple[str, object]]:
    """The rows of a parquet corpus, a batch at a time (a 21M-row corpus never sits in
    memory)."""
    import pyarrow
    import pyarrow.parquet

    try:
        batches = pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=1 << 16)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield f"corpus file {path}: row {row}", record
    except (OSError, pyarrow.ArrowException) as error:
        raise CorpusFormatError(
            f"corpus file {path}: not a readable parquet file ({error})"
        ) from error


#: Corpus formats by file suffix (anything else is read as plain JSONL).
_READERS = {".gz": _read_gzipped_jsonl, ".parquet": _read_parquet}


def _write_store(source: Path, directory: Path) -> None:
    """Validate every record of ``source`` and write the store's columns into ``directory``."""
    read = _READERS.get(source.suffix, _read_jsonl)
    blobs = {name: (directory / f"{name}.bin").open("wb") for name in _COLUMNS}
    offsets = {name: array("q", [0]) for name in _COLUMNS}
    try:
        for row, (where, record) in enumerate(read(source)):
            if not isinstance(record, dict):
                raise CorpusFormatError(f"{where} is not a JSON object")
            contents = contents_of(record)
            if contents is None:
                raise CorpusFormatError(f'{where} needs a string "contents" field (or "text")')
            for name, value in (("ids", str(record.get("id", row))), ("contents", contents)):
                encoded = value.encode("utf-8", "surrogatepass")
                blobs[name].write(encoded)
                offsets[name].append(offsets[name][-1] + len(encoded))
    finally:
        for blob in blobs.values():
            blob.close()
    if len(offsets["ids"]) == 1:
        raise CorpusFormatError(f"corpus file {source} has no passages")
    for name in _COLUMNS:
        np.save(directory / f"{name}.npy", np.frombuffer(offsets[name], dtype=np.int64))


class _Column:
    """One column of a passage store: row ``i`` is ``blob[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, directory: Path, name: str):
        # A plain ndarray over the memory map: np.memmap's own indexing costs a few
        # microseconds a row, more than the decode.
        self.offsets = np.asarray(np.load(directory / f"{name}.npy", mmap_mode="r"))
        with (directory / f"{name}.bin").open("rb") as handle:
            # An empty file cannot be mapped (a corpus of empty ids is possible).
            size = handle.seek(0, io.SEEK_END)
            self.blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def rows(self, rows: np.ndarray) -> list[str]:
        """The strings of ``rows`` (a 1-D array of valid, non-negative row numbers)."""
        blob = self.blob
        starts, ends = self.offsets[rows].tolist(), self.offsets[rows + 1].tolist()
        return [
            blob[start:end].decode("utf-8", "surrogatepass")
            for start, end in zip(starts, ends, strict=True)
        ]


def _passage_store(source: Path) -> Path:
    """The store of ``source``, built once into the cache (keyed by the file's
    fingerprint, so an edited corpus is converted again)."""
    name = f"{source.name}-{file_fingerprint(source)}-v{STORE_VERSION}"
    return build_once(cache_dir() / "passage-stores" / name, lambda tmp: _write_store(source, tmp))


class Corpus(Sequence[Passage]):
    """A passage corpus: one ``{"id": …, "contents": "\\"Title\\"\\ntext"}`` per line.

    ``corpus[i]`` is the i-th non-blank line as a :class:`Passage`. Records without an
    ``id`` get their row number as id. Records in ``{"title", "text"}`` layout are
    accepted too and rendered as wiki-18 ``contents``; ``{"text"}`` alone is the contents.

    Args:
        path: the JSONL file, plain or gzipped, or a parquet file with the same columns.
            Converted into the passage store on first use (validating every record:
            :class:`CorpusFormatError` names the first bad line).
    """

    def __init__(self, path: str | Path):
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"corpus file {source} does not exist")
        self.source = source
        store = _passage_store(source)
        self._ids, self._contents = (_Column(store, name) for name in _COLUMNS)
        self._size = len(self._ids.offsets) - 1

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Passage:  # type: ignore[override]
        return self.passage(index)

    def passage(self, index: int, score: float = 0.0) -> Passage:
        """Row ``index`` (negative counts from the end); ``score`` is attached for retriever
        results; out of range is the IndexError :meth:`ranked_passages` raises."""
        return self.passages([index], [score])[0]

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

        One call per batch, flat: the rows' offsets are gathered with NumPy and the
        passages built in one pass, which is most of what a batch costs here.
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
        flat_rows = rows.ravel().astype(np.int64) % size  # negative rows count from the end
        # tuple.__new__ on (id, contents, score): a third faster than calling the
        # NamedTuple, whose __new__ is Python code.
        new = tuple.__new__
        flat = [
            new(Passage, record)
            for record in zip(
                self._ids.rows(flat_rows),
                self._contents.rows(flat_rows),
                scores.ravel().tolist(),
                strict=True,
            )
        ]
        k = rows.shape[1]
        if k == 0:
            return [[] for _ in rows]
        return [flat[start : start + k] for start in range(0, len(flat), k)]

    def iter_contents(self) -> Iterator[str]:
        """Every passage's ``contents`` in row order (for index building), a chunk of rows
        at a time."""
        for start in range(0, len(self), 1 << 14):
            yield from self._contents.rows(np.arange(start, min(start + (1 << 14), len(self))))

    def __reduce__(self):
        # An mmap cannot be pickled; a copy sent to a Ray worker reopens the store there.
        return (Corpus, (str(self.source),))

    def __repr__(self) -> str:
        return f"Corpus({str(self.source)!r}, passages={len(self)})"
