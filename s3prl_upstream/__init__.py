"""S3PRL side of streaming-ssl: the streaming WavLM model (``s3prl_upstream.wavlm``) and its s3prl upstreams.

Importing this package imports neither s3prl nor NeMo; modules that need s3prl import it themselves.
"""
