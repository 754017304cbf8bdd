"""NeMo-free building blocks shared by both streaming models (NEST's runner and the streaming WavLM)."""
