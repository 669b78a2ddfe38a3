"""Language-model generation for agents: one token-in/token-out interface, several backends."""
