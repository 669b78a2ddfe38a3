"""Warm starts: SFT recipes that build the starting policies of RL runs.

``sft.py`` (supervised fine-tuning on token demonstrations), ``sanity_task.py`` (a toy
task and its warm-started tiny policy, used by tests and the quickstart) and
``synthwiki_policy.py`` (the SynthWiki dead-end testbed's policies). Their model
aliases are registered in ``agents/__init__.py``; ``agents.llm`` and ``agents.rexrag``
never import this package.
"""
