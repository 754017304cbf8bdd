"""Distillation recipe that makes streaming WavLM checkpoints from a WavLM teacher (STREAMING_WAVLM.md, "Distillation").

Modules: ``alignment`` (student/teacher frame grids), ``teacher`` (frozen targets), ``student`` (build and
initialise from the teacher), ``data`` (manifest crops), ``losses``, ``stages`` (the staged schedule),
``module`` (the LightningModule), ``recipe`` (config -> trained checkpoints).
"""
