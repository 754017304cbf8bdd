"""Model configuration of the streaming WavLM and the two `-g` YAML formats it is read from.

Format 1 (constructor arguments)::

    wavlm:
      num_layers: 6
      causal: true
      window_size: 512
      lookahead_size: 3

Format 2 (flat keys of the original distillation config; keys without the ``student_`` prefix belong
to the training recipe and are ignored)::

    student_num_layers: 6
    student_causal: true
    student_lookahead: 3

Keys left out take the defaults of :class:`StreamingWavLMConfig` (12 x 1024, causal, window 512,
lookahead 3), not those of any other implementation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from nemo_streaming_ssl.core.latency import FrameTiming

SAMPLE_RATE = 16000  # the WavLM front end's rate: 320-sample frames are 20 ms


class ModelConfigError(ValueError):
    """A model configuration is invalid or ambiguous. The message names the source, the key and the fix."""


# Flat `student_*` keys of the original distillation config -> constructor arguments.
FLAT_KEYS = {
    "student_num_layers": "num_layers",
    "student_dim": "dim",
    "student_num_heads": "num_heads",
    "student_dropout": "dropout",
    "student_causal": "causal",
    "student_lookahead": "lookahead_size",
    "student_window": "window_size",
}
# Constructor arguments of the original implementation that tune its speed only; accepted and ignored.
NO_EFFECT_KEYS = ("max_cached_steps", "use_flex_attention")


@dataclass(frozen=True)
class StreamingWavLMConfig:
    """Architecture of the streaming WavLM (STREAMING_WAVLM.md, "Architecture and checkpoint layout").

    Frames are 20 ms (320 samples at 16 kHz)."""

    hidden_dims: tuple[int, ...] = (512,) * 7
    kernel_sizes: tuple[int, ...] = (10,) + (3,) * 4 + (2,) * 2
    strides: tuple[int, ...] = (5,) + (2,) * 4 + (2,) * 2
    num_layers: int = 12
    dim: int = 1024
    ffn_dim: int = 4096
    num_heads: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    conv_pos: int = 128
    conv_pos_groups: int = 16
    causal: bool = True
    window_size: int = 512  # frames of keys a query may see (its own block included), causal mode only
    lookahead_size: int = 3  # frames; a block is lookahead_size + 1 frames
    dropout: float = 0.0
    source: str = field(default="<defaults>", compare=False, repr=False)  # where it was read from, for errors

    def __post_init__(self) -> None:
        for name in ("hidden_dims", "kernel_sizes", "strides"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v > 0 for v in value):
                self._fail(name, f"must be a non-empty list of positive integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        if not len(self.hidden_dims) == len(self.kernel_sizes) == len(self.strides):
            self._fail("hidden_dims", "hidden_dims, kernel_sizes and strides must have the same length")
        for name in ("num_layers", "dim", "ffn_dim", "num_heads", "num_buckets", "max_distance", "conv_pos",
                     "conv_pos_groups", "window_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                self._fail(name, f"must be a positive integer, got {getattr(self, name)!r}")
        if not _is_int(self.lookahead_size) or self.lookahead_size < 0:
            self._fail("lookahead_size", f"must be an integer >= 0, got {self.lookahead_size!r}")
        if not isinstance(self.causal, bool):
            self._fail("causal", f"must be true or false, got {self.causal!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            self._fail("dropout", f"must be a number in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.dim % self.num_heads:
            self._fail("num_heads", f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.dim % self.conv_pos_groups:
            self._fail("conv_pos_groups", f"dim {self.dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")
        if self.num_buckets % 2 or self.num_buckets < 4:
            self._fail("num_buckets", f"must be even and >= 4 (half per direction), got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            self._fail("max_distance", f"must exceed num_buckets // 4 = {self.num_buckets // 4} (exact range)")
        if self.window_size < self.block_frames:
            self._fail("window_size", f"{self.window_size} frames is shorter than one block "
                       f"(lookahead_size + 1 = {self.block_frames} frames)")

    def _fail(self, key: str, why: str) -> None:
        raise ModelConfigError(f"{self.source}: model config key {key!r} {why}")

    # Derived quantities, in the units their names say.
    @property
    def hop_samples(self) -> int:
        """Samples per output frame (320 = 20 ms at 16 kHz)."""
        return math.prod(self.strides)

    @property
    def block_frames(self) -> int:
        """Frames per attention block: the frame itself plus its lookahead."""
        return self.lookahead_size + 1

    @property
    def frame_timing(self) -> FrameTiming:
        """Frame t can be computed once samples 0..320 t are in hand, and stands for the samples it is the first
        frame to see, (320 (t - 1), 320 t]; blocks leave whole (nemo_streaming_ssl.core.latency)."""
        return FrameTiming(sample_rate=SAMPLE_RATE, frame_samples=self.hop_samples, chunk_frames=self.block_frames,
                           ready_offset_samples=1, start_offset_samples=1 - self.hop_samples)

    @property
    def receptive_field_samples(self) -> int:
        """Samples seen by one frame of the conv front end (400 for the WavLM front end)."""
        field_samples, jump = 1, 1
        for kernel, stride in zip(self.kernel_sizes, self.strides):
            field_samples += (kernel - 1) * jump
            jump *= stride
        return field_samples

    @property
    def kv_cache_frames(self) -> int:
        """Past frames a streaming layer keeps. A complete block needs window - block of them; the last,
        partial block of r frames needs window - r (its window ends at the last frame so far), so
        window - 1 keeps flush() exact."""
        return self.window_size - 1

    # Serialisation: the same shape `-g` accepts.
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"wavlm": {constructor arguments}}`` with plain YAML/JSON types."""
        args = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        return {"wavlm": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}

    def replace(self, **changes: Any) -> "StreamingWavLMConfig":
        """A copy with some constructor arguments changed (validated again)."""
        changes.setdefault("source", f"{self.source} with {', '.join(sorted(changes))} changed")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "StreamingWavLMConfig":
        """Read either format (module docstring). Unknown constructor or ``student_*`` keys are errors."""
        if not isinstance(data, Mapping):
            raise ModelConfigError(f"{source}: a model config must be a mapping, got {type(data).__name__}")
        flat = {FLAT_KEYS[k]: v for k, v in data.items() if k in FLAT_KEYS}
        unknown_flat = sorted(k for k in data if isinstance(k, str) and k.startswith("student_") and k not in FLAT_KEYS)
        if unknown_flat:
            raise ModelConfigError(f"{source}: unknown key(s) {unknown_flat}; flat model configs accept "
                                   f"{sorted(FLAT_KEYS)}")
        if "wavlm" not in data:
            if not flat:
                raise ModelConfigError(
                    f"{source}: no model config found (keys: {sorted(map(str, data))}). Write either a `wavlm:` "
                    f"mapping of {sorted(_arg_names())} or flat keys {sorted(FLAT_KEYS)}")
            return cls(**flat, source=source)
        args = data["wavlm"]
        if not isinstance(args, Mapping):
            raise ModelConfigError(f"{source}: `wavlm:` must be a mapping of constructor arguments, got {args!r}")
        unknown = sorted(k for k in args if k not in _arg_names() and k not in NO_EFFECT_KEYS)
        if unknown:
            raise ModelConfigError(f"{source}: unknown key(s) {unknown} under `wavlm:`; accepted: {sorted(_arg_names())}")
        args = {k: v for k, v in args.items() if k not in NO_EFFECT_KEYS}
        clash = sorted(k for k, v in flat.items() if k in args and args[k] != v)
        if clash:
            raise ModelConfigError(f"{source}: `wavlm:` and the flat student_* keys disagree on {clash}; keep one")
        return cls(**{**flat, **args}, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StreamingWavLMConfig":
        path = Path(path)
        if not path.is_file():
            raise ModelConfigError(f"model config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ModelConfigError(f"{path}: not valid YAML: {err}") from err
        return cls.from_dict(data if data is not None else {}, source=str(path))

    def differences(self, other: "StreamingWavLMConfig", fields: tuple[str, ...] | None = None) -> list[str]:
        """Human-readable ``name: self vs other`` for each differing constructor argument (optionally a subset)."""
        names = fields or _arg_names()
        return [f"{n}: {getattr(self, n)!r} ({self.source}) vs {getattr(other, n)!r} ({other.source})"
                for n in names if getattr(self, n) != getattr(other, n)]


def _arg_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(StreamingWavLMConfig) if f.name != "source")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_model_config(model_config: "StreamingWavLMConfig | Mapping | str | Path | None") -> "StreamingWavLMConfig | None":
    """Accept a config object, a dict in either format, or a YAML path (what `-g` passes); None stays None."""
    if model_config is None or isinstance(model_config, StreamingWavLMConfig):
        return model_config
    if isinstance(model_config, Mapping):
        return StreamingWavLMConfig.from_dict(model_config)
    if isinstance(model_config, (str, Path)):
        if str(model_config) == "":
            return None
        return StreamingWavLMConfig.from_yaml(model_config)
    raise ModelConfigError(f"model_config must be a YAML path, a dict or a StreamingWavLMConfig, "
                           f"got {type(model_config).__name__}")
