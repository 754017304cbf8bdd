"""Fine-tune a pretrained streaming NEST encoder into a cache-aware streaming CTC model (NeMo).

Entry points: ``finetune.build_finetune_model(cfg, trainer)`` (used by
``examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py``), ``streaming_ctc`` (exact streaming
transcription of the result: ``StreamingCTCTranscriber``) and ``streaming`` (NeMo's own ``conformer_stream_step``,
kept for comparison). ``pretrained_config`` and ``transcripts`` import no NeMo;
the other modules do, so import them explicitly.
"""
