"""A training run (``rexrag train``) and what it leaves: the loop, the run directory and
its checkpoints with their policies, signatures, trackers, curves, samples and report,
the console and log file, before/after evaluation under the run's protocol, provenance,
and starting Ray for it."""
