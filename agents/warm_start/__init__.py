"""Warm starts: SFT recipes that build the starting policies of RL runs.

``sft.py`` (supervised fine-tuning on token demonstrations); the recipes
``synthwiki_policy.py`` (the SynthWiki dead-end testbed's policies) and
``real_qa_policy.py`` (SmolLM2 on real NQ + HotpotQA questions); ``recipes.py`` (the
registered aliases) and ``store.py`` (building, caching and shipping them);
``sanity_task.py`` (a toy task and its warm-started tiny policy, used by tests and the
quickstart). Their model aliases are registered in ``agents/__init__.py``;
``agents.llm`` and ``agents.rexrag`` never import this package.
"""
