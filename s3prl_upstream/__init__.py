"""S3PRL side of streaming-ssl: the streaming WavLM model and its s3prl upstream entries.

Kept import-free on purpose: the s3prl import hook (``s3prl_hook``) is imported at every interpreter
start-up through a ``.pth`` file, so importing this package must not pull in torch.
"""
