"""S3PRL side of streaming-ssl: the streaming WavLM model (``s3prl_upstream.wavlm``) and its s3prl upstreams.

Importing this package imports neither s3prl nor NeMo; modules that need s3prl import it themselves.
It imports no torch either: the s3prl import hook (``s3prl_hook``, run from a ``.pth`` file) imports this
package at every interpreter start-up.
"""
