"""NeMo-free building blocks shared by both streaming models (NEST's runner and the streaming WavLM):
the streaming protocol (``protocol``), the key/value window (``kv_window``), the latency definition
(``latency``), the streamed-vs-one-shot measure (``exactness``) and the CPU fast path for few-row linear
layers at inference (``fast_linear``). See docs/streaming_core.md."""
