"""Agents that act in ``rexrag_env`` environments, and how they learn."""
