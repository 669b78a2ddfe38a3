"""Ray Tune sweeps over REX-RAG configurations (search spaces, schedulers, result tables)."""
