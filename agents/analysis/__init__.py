"""Measurements about runs and policies that are not runs themselves: the memory a run
would need per GPU (``memory_plan.py``, ``rexrag plan``), a policy's dead-end profile
(``dead_end_profile.py``, ``rexrag profile``) and the paired statistics experiments
report (``paired_stats.py``)."""
