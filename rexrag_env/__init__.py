"""rexrag_env: the search-augmented QA task as a Gymnasium environment.

Importing the package registers ``rexrag_env/SearchQA-v0`` and ``rexrag_env/SynthWiki-v0``::

    import gymnasium as gym
    import rexrag_env  # noqa: F401  (registers the environment)

    env = gym.make("rexrag_env/SearchQA-v0", dataset="hotpotqa", retriever="bm25")
    env = gym.make("rexrag_env/SynthWiki-v0", split="train")  # the generated testbed
"""

import gymnasium

from rexrag_env.datasets import QAExample, load_qa_dataset
from rexrag_env.env import SearchQAEnv

SEARCH_QA_ENV_ID = "rexrag_env/SearchQA-v0"
SYNTHWIKI_ENV_ID = "rexrag_env/SynthWiki-v0"

if SEARCH_QA_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=SEARCH_QA_ENV_ID, entry_point="rexrag_env.env:SearchQAEnv")
if SYNTHWIKI_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=SYNTHWIKI_ENV_ID, entry_point="rexrag_env.synthwiki:make_synthwiki_env")

__all__ = ["SEARCH_QA_ENV_ID", "SYNTHWIKI_ENV_ID", "QAExample", "SearchQAEnv", "load_qa_dataset"]
