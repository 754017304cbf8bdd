"""Data tools shared by both halves of the project: manifests and a local espeak-ng corpus (no NeMo import)."""

from .manifest import ManifestEntry, ManifestError, ManifestReport, build_manifests, read_manifest, validate_manifest

__all__ = ["ManifestEntry", "ManifestError", "ManifestReport", "build_manifests", "read_manifest", "validate_manifest"]
