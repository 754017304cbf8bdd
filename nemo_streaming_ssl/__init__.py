"""Streaming NEST pretraining on NeMo.

Importing this package does not import NeMo: the data tools (``nemo_streaming_ssl.data``) stay light
and are shared with the streaming WavLM distillation recipe. NeMo-dependent modules import it themselves.
"""
