"""Repository tools run by hand or by CI, not part of the rexrag package (setup.cfg
includes only rexrag_env, agents and tuning)."""
