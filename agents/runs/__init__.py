"""What ``rexrag train`` leaves on disk: the run directory, checkpoints and their
policies, before/after evaluation under the run's protocol, learning curves."""
