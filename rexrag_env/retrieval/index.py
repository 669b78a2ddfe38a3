"""Build, save and load a retrieval index, whatever the backend.

An index directory from ``rexrag index`` holds ``rexrag_index.json`` (which backend,
which corpus, how many passages) next to the backend's own files. ``load_retriever``
also opens the indexes FlashRAG and Search-R1 users already have, given what those
leave out: a bm25s directory (FlashRAG's BM25 on its bm25s backend) with its corpus,
and a bare FAISS file (``e5_Flat.index``) with its corpus and encoder;
:func:`index_format` tells which a path is. Loading checks the passage count, so an
index is not silently paired with a different corpus.

``rexrag_index.json`` decides which files are read (the corpus may be any path: a
corpus normally lives outside its index), so it is signed like a checkpoint
(:mod:`rexrag_env.signing`): its fields and the digests of the index's settings files
(``*.json``: tokenizer vocabulary, encoder) carry an HMAC with this user's key, and
:func:`load_retriever` refuses an index whose manifest was edited or written by
someone else unless ``trust_index`` (``--trust-index``), or until the user vouches for
it once with :func:`trust_index` (``rexrag trust-index``), which signs it. The large
arrays (the BM25 matrix, the FAISS index) are not hashed at every load (tens of GB at
wiki-18 scale); they are read as numbers, never unpickled.

``build_index`` replaces only an empty directory or an index (a directory holding
``rexrag_index.json``), never anything else.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rexrag_env.registry import NameRegistry
from rexrag_env.retrieval.base import RetrievalError, Retriever
from rexrag_env.retrieval.corpus import Corpus
from rexrag_env.signing import UntrustedFileError, check_signature, file_digest, sign

META_FILE = "rexrag_index.json"
_FORMAT_VERSION = 1
#: The index backends by kind (a ``load``/``build``/``save`` class each); named, not
#: imported, because the backends subclass :class:`IndexedRetriever` from this module.
_BACKENDS = NameRegistry("retriever kind")
_BACKENDS.register("bm25", "rexrag_env.retrieval.bm25:BM25Retriever")
_BACKENDS.register("dense", "rexrag_env.retrieval.dense:DenseRetriever")
RETRIEVER_KINDS = tuple(_BACKENDS.names())
#: The parameter file ``bm25s.BM25.save`` writes: a directory with it but without
#: :data:`META_FILE` is a bare bm25s index (FlashRAG writes those).
_BM25S_PARAMS_FILE = "params.index.json"
#: The corpus file ``bm25s.BM25.save`` writes when the index was given its corpus (as
#: FlashRAG does): the default corpus of a bm25s directory.
_BM25S_CORPUS_FILE = "corpus.jsonl"
#: The ``rexrag search``/``serve`` flag that opens an index whose manifest fails its check.
TRUST_FLAG = "--trust-index"
#: The command that signs such an index for this user (:func:`trust_index`).
TRUST_COMMAND = "rexrag trust-index"
#: The field of :data:`META_FILE` that holds its HMAC.
_SIGNATURE_FIELD = "signature"


class UntrustedIndexError(RetrievalError):
    """An index's manifest fails its check (edited, unsigned, another user's)."""


class IndexedRetriever:
    """Base of the in-process retrievers: read-only handles to a (possibly huge) index.

    A deep copy shares the index instead of duplicating it (``gymnasium`` and RLlib
    copy environments), and a pickle (sending an env to a Ray worker) reopens the
    index from its files on the other side.
    """

    #: The ``load_retriever`` arguments (index path, corpus file, encoder) this index was
    #: opened with; set by ``load_retriever``, so that another process reopens it alike.
    load_args: tuple[str, str, str | None] | None = None

    @property
    def index_dir(self) -> str | None:
        """The index directory (or bare FAISS file) this index was loaded from, if any."""
        return self.load_args[0] if self.load_args else None

    def __deepcopy__(self, memo: dict) -> IndexedRetriever:
        return self

    def __reduce__(self):
        if self.load_args is None:
            raise TypeError(
                f"this {type(self).__name__} lives only in memory: save it with build_index(...) "
                "and open it with load_retriever(dir) to send it to another process"
            )
        # the sending process checked the manifest; the receiver may lack the key
        return (functools.partial(load_retriever, trust_index=True), self.load_args)


def build_index(
    corpus_path: str | Path,
    kind: str,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    **options: Any,
) -> Retriever:
    """Index the corpus with the chosen backend and save it to ``out_dir``.

    ``options`` go to the backend: for "bm25" ``stemmer_language``, ``k1``, ``b``; for
    "dense" ``settings`` (an EncoderSettings), ``index_type``, ``device``, ``use_gpu``.
    The directory is written completely or not at all.
    """
    if kind not in RETRIEVER_KINDS:
        raise ValueError(f"unknown retriever kind {kind!r}; choose one of {RETRIEVER_KINDS}")
    out = Path(os.path.abspath(out_dir))  # `--out ..` names the parent, not ".."
    check_replaceable(out, overwrite)  # before the build, which may take hours
    corpus = Corpus(corpus_path)
    retriever = _backend(kind).build(corpus, show_progress=show_progress, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name each time: a crashed build's leftover is never in the way, nor deleted
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        save_index(retriever, kind, staging)
        check_replaceable(out, overwrite)  # again: the directory may have changed meanwhile
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
            os.replace(out, retired)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return retriever


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` unless ``out`` may become an index: absent, an empty
    directory, or (with ``overwrite``) an index; anything else is named and kept."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FileExistsError(f"{out} exists and is not a directory: choose another --out")
    if not out.exists():
        return
    entries = sorted(path.name + ("/" if path.is_dir() else "") for path in out.iterdir())
    if not entries:
        return
    if META_FILE not in entries:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise FileExistsError(
            f"{out} holds {shown}, which is not a rexrag index (no {META_FILE}): refusing to "
            "replace it, with or without --overwrite; choose another --out"
        )
    if not overwrite:
        raise FileExistsError(
            f"index directory {out} is not empty: it holds an index (pass overwrite=True / "
            "--overwrite to replace it)"
        )


def save_index(retriever: Retriever, kind: str, directory: Path) -> None:
    """Write ``retriever``'s files and the signed metadata that ties them to their corpus."""
    corpus: Corpus = retriever.corpus  # type: ignore[attr-defined]
    retriever.save(directory)  # type: ignore[attr-defined]
    meta = {
        "format_version": _FORMAT_VERSION,
        "kind": kind,
        "corpus": str(corpus.source.resolve()),
        "num_passages": len(corpus),
    }
    meta[_SIGNATURE_FIELD] = sign(_signed_part(directory, meta))
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def _signed_part(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What an index's signature covers: its metadata and its settings files' digests.

    A settings name that is a link or not a regular file is refused before it is read:
    rexrag never writes those, and one planted in a foreign index (a link to /dev/zero,
    a FIFO) would otherwise hang the check or the signing."""
    settings = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == META_FILE:
            continue
        if path.is_symlink() or not path.is_file():
            raise UntrustedFileError(
                f"{path} is a link or not a regular file; rexrag never writes those"
            )
        settings[path.name] = file_digest(path)
    fields = {name: value for name, value in meta.items() if name != _SIGNATURE_FIELD}
    return {**fields, "settings_files": settings}


def check_index(directory: Path, meta: dict[str, Any]) -> None:
    """Raise :class:`UntrustedIndexError` unless this user's key signed the index's
    metadata and settings files as they are."""
    try:
        if _SIGNATURE_FIELD not in meta:
            raise UntrustedFileError(
                f"its {META_FILE} is unsigned (built by a rexrag from before indexes were "
                "signed, or by hand)"
            )
        check_signature(_signed_part(directory, meta), meta[_SIGNATURE_FIELD], META_FILE)
    except UntrustedFileError as error:
        raise UntrustedIndexError(
            f"refusing to open index {directory}: {error}. Its {META_FILE} decides which "
            f"corpus file is read and served (it names {meta.get('corpus')}); rebuild the "
            f"index with `rexrag index --overwrite`, or if you trust it sign it for yourself "
            f"with `{TRUST_COMMAND} {directory}` (for rexrag train/eval/tune too), or open it "
            f"once with `rexrag search/serve {TRUST_FLAG}`"
        ) from error


def trust_index(index_dir: str | Path, corpus_path: str | Path | None = None) -> dict[str, Any]:
    """Sign a rexrag index someone else built (or an older rexrag left unsigned) with this
    user's key, once they vouch for it, so that every command opens it (``rexrag train``,
    ``eval`` and ``tune`` take an index only through their config: no per-run flag).

    ``corpus_path`` re-points the manifest at this machine's copy of the corpus (an index
    from elsewhere names a path on the machine that built it); the passage count is
    checked against it first. Only the manifest is rewritten, atomically; the manifest it
    signs is returned (what the user is trusting: which backend, which corpus).
    """
    directory = Path(index_dir)
    if index_format(directory) != "rexrag":
        raise RetrievalError(
            f"{directory} is not a rexrag index directory (no {META_FILE}): bm25s directories "
            "and FAISS files have no manifest to sign, their corpus is what you pass"
        )
    meta = read_index_meta(directory)
    if (
        not isinstance(meta, dict)
        or meta.get("kind") not in RETRIEVER_KINDS
        or not isinstance(meta.get("corpus"), str)
        or not isinstance(meta.get("num_passages"), int)
    ):
        raise RetrievalError(
            f"{directory / META_FILE} is not the manifest of a rexrag index (a kind of "
            f"{RETRIEVER_KINDS}, a corpus path, a passage count): rebuild the index"
        )
    corpus = _recorded_corpus(directory, meta, corpus_path)
    meta = {name: value for name, value in meta.items() if name != _SIGNATURE_FIELD}
    meta["corpus"] = str(corpus.source.resolve())
    meta[_SIGNATURE_FIELD] = sign(_signed_part(directory, meta))
    # a fresh name, created exclusively: the directory is someone else's, and a fixed
    # staging name could be a link planted to overwrite one of this user's files
    handle, staged = tempfile.mkstemp(prefix=f".{META_FILE}.", suffix=".new", dir=directory)
    try:
        with os.fdopen(handle, "w") as staging:
            staging.write(json.dumps(meta, indent=2))
        os.replace(staged, directory / META_FILE)
    finally:
        Path(staged).unlink(missing_ok=True)
    return meta


def read_index_meta(index_dir: str | Path) -> dict[str, Any]:
    """The metadata of an index directory, with a clear error when it is not one."""
    meta_path = Path(index_dir) / META_FILE
    if not meta_path.is_file():
        raise RetrievalError(
            f"{index_dir} is not a rexrag index (no {META_FILE}); build one with `rexrag index`"
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise RetrievalError(f"{meta_path} is corrupt ({error}); rebuild the index") from error


def index_format(index_path: str | Path) -> str:
    """What ``index_path`` holds: ``"rexrag"`` (a directory from ``rexrag index``),
    ``"bm25s"`` (a bm25s directory without our metadata, as FlashRAG's bm25s backend
    writes it) or ``"faiss"`` (any other file: a bare FAISS index, as Search-R1 and
    FlashRAG write them). Anything else raises a :class:`RetrievalError` saying why."""
    path = Path(index_path)
    if path.is_file():
        return "faiss"
    if not path.is_dir():
        raise RetrievalError(f"index {path} does not exist")
    if (path / META_FILE).is_file():
        return "rexrag"
    if (path / _BM25S_PARAMS_FILE).is_file():
        return "bm25s"
    # Search-R1's and FlashRAG's default BM25 is a Lucene index: say so rather than only
    # what is missing.
    lucene = any(path.glob("segments_*"))
    hint = " It looks like a Lucene (pyserini) index, which rexrag cannot read." if lucene else ""
    raise RetrievalError(
        f"{path} is not a rexrag index (no {META_FILE}), nor a bm25s index (no "
        f"{_BM25S_PARAMS_FILE}).{hint} Build one with `rexrag index`, or pass a bare FAISS "
        "index file"
    )


def check_passage_count(index_name: str, num_indexed: int, corpus: Corpus) -> None:
    """Refuse a corpus of another length than the index's: the index's rows would name
    the wrong passages (a row is a corpus line number)."""
    if num_indexed != len(corpus):
        raise RetrievalError(
            f"{index_name} was built on a corpus of {num_indexed} passages but "
            f"{corpus.source} has {len(corpus)}: pass the corpus it was built on (--corpus / "
            "corpus_path=) or rebuild the index"
        )


def load_retriever(
    index_path: str | Path,
    corpus_path: str | Path | None = None,
    encoder: str | None = None,
    *,
    trust_index: bool = False,
    **options: Any,
) -> Retriever:
    """Open a saved index of any :func:`index_format`.

    Args:
        index_path: a ``rexrag index`` directory, a bm25s directory or a bare FAISS file.
        corpus_path: the corpus the index was built on. A rexrag index records it (this
            overrides it, for an index moved to another machine); a bm25s directory
            defaults to the ``corpus.jsonl`` bm25s saved in it, if any; a FAISS file
            needs it.
        encoder: the query encoder (name or path) of a bare FAISS file, which records
            none; the other formats record theirs and refuse one.
        options: go to the backend's loader (``num_threads`` for BM25; ``device``,
            ``use_gpu`` for dense).
        trust_index: open a rexrag index whose signed manifest fails its check
            (:func:`check_index`); bm25s directories and FAISS files have no manifest:
            their corpus is what the caller passes.
    """
    path = Path(index_path)
    kind = index_format(path)
    if encoder is not None and kind != "faiss":
        raise RetrievalError(
            f"an encoder is only given for a bare FAISS index file; {path} is a {kind} index, "
            "which knows how its queries are encoded"
        )
    if kind == "rexrag":
        meta = read_index_meta(path)
        if not trust_index:
            check_index(path, meta)
        corpus = _recorded_corpus(path, meta, corpus_path)
        load = functools.partial(_backend(meta["kind"]).load, path, corpus)
    elif kind == "bm25s":
        saved_corpus = path / _BM25S_CORPUS_FILE
        if corpus_path is None and not saved_corpus.is_file():
            raise RetrievalError(
                f"{path} is a bm25s index directory without the {_BM25S_CORPUS_FILE} bm25s "
                "saves an index's corpus in: pass the JSONL corpus it was built on (--corpus "
                "wiki-18.jsonl / corpus_path=)"
            )
        corpus = Corpus(corpus_path or saved_corpus)
        load = functools.partial(_backend("bm25").load_bm25s, path, corpus)
    else:
        if corpus_path is None or encoder is None:
            raise RetrievalError(
                f"{path} is a bare FAISS index file, which records neither its corpus nor its "
                "encoder: pass the JSONL corpus it was built on and the encoder of its "
                "passages (--corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 / "
                "corpus_path=, encoder=)"
            )
        corpus = Corpus(corpus_path)
        load = functools.partial(_backend("dense").load_faiss_file, path, corpus, encoder)
    try:
        retriever = load(**options)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if isinstance(error, RetrievalError):
            raise
        raise RetrievalError(f"cannot load index {path}: {error}") from error
    retriever.load_args = (str(path.resolve()), str(corpus.source.resolve()), encoder)
    return retriever


def _recorded_corpus(
    directory: Path, meta: dict[str, Any], corpus_path: str | Path | None
) -> Corpus:
    """A rexrag index's corpus: where its metadata says, unless ``corpus_path`` moves it."""
    corpus_file = Path(corpus_path) if corpus_path else Path(meta["corpus"])
    if not corpus_file.is_file():
        raise RetrievalError(
            f"index {directory} was built on {meta['corpus']}, which does not exist here: "
            "pass the corpus file (--corpus / corpus_path=)"
        )
    corpus = Corpus(corpus_file)
    check_passage_count(f"index {directory}", meta["num_passages"], corpus)
    return corpus


def _backend(kind: str):
    if kind not in _BACKENDS:
        raise RetrievalError(f"unknown retriever kind {kind!r} in index metadata")
    return _BACKENDS.resolve(kind)
