"""rexrag_env: the search-augmented QA task as a Gymnasium environment.

Importing the package registers ``rexrag_env/SearchQA-v0`` and ``rexrag_env/SynthWiki-v0``,
each with a vector entry point (:class:`SearchQAVectorEnv`, one retriever call per step)::

    import gymnasium as gym
    import rexrag_env  # noqa: F401  (registers the environment)

    env = gym.make("rexrag_env/SearchQA-v0", dataset="hotpotqa", retriever="bm25")
    env = gym.make("rexrag_env/SynthWiki-v0", split="train")  # the generated testbed
    envs = gym.make_vec("rexrag_env/SearchQA-v0", num_envs=8)  # SearchQAVectorEnv
"""

import gymnasium

from rexrag_env.datasets import DATASETS, QAExample, load_qa_dataset
from rexrag_env.env import SearchQAEnv
from rexrag_env.retrieval.factory import RETRIEVERS
from rexrag_env.retrieval.index import RETRIEVER_KINDS
from rexrag_env.splits import SPLITS as REAL_QA_SPLITS
from rexrag_env.synthwiki import SPLITS as SYNTHWIKI_SPLITS
from rexrag_env.vector import SearchQAVectorEnv

SEARCH_QA_ENV_ID = "rexrag_env/SearchQA-v0"
SYNTHWIKI_ENV_ID = "rexrag_env/SynthWiki-v0"

if SEARCH_QA_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=SEARCH_QA_ENV_ID,
        entry_point="rexrag_env.env:SearchQAEnv",
        vector_entry_point="rexrag_env.vector:SearchQAVectorEnv",
    )
if SYNTHWIKI_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=SYNTHWIKI_ENV_ID,
        entry_point="rexrag_env.synthwiki:make_synthwiki_env",
        vector_entry_point="rexrag_env.synthwiki:make_synthwiki_vector_env",
    )

# Named datasets and retrievers (the layers that look names up never import their makers).
for _split in SYNTHWIKI_SPLITS:
    DATASETS.register(
        f"synthwiki/{_split}", "rexrag_env.synthwiki:synthwiki_split_path", split=_split
    )
for _split in REAL_QA_SPLITS:  # nq-hotpotqa/train, heldout/<benchmark>
    DATASETS.register(_split, "rexrag_env.splits:split_path", split=_split)
for _kind in RETRIEVER_KINDS:
    RETRIEVERS.register(_kind, "rexrag_env.embedded:embedded_retriever", kind=_kind)
RETRIEVERS.register("synthwiki", "rexrag_env.synthwiki:synthwiki_retriever")

__all__ = [
    "SEARCH_QA_ENV_ID",
    "SYNTHWIKI_ENV_ID",
    "QAExample",
    "SearchQAEnv",
    "SearchQAVectorEnv",
    "load_qa_dataset",
]
