"""REX-RAG on Ray RLlib: mixed sampling in the rollout workers, policy correction in the learner."""
