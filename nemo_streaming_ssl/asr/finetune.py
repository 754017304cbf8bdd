"""Build a streaming CTC model from a fine-tuning config, its encoder initialised from a pretrained ``.nemo``.

Order of work, each step failing with a message that names the key, file or line:
1. read the pretrained config (only its YAML is unpacked) and derive the encoder/preprocessor configs from it;
2. validate every manifest and require transcripts;
3. build the subword tokenizer from the training transcripts, or derive/check the char vocabulary;
4. build the model (datasets included) and check that CTC can align every utterance as NeMo tokenized it;
5. let NeMo's ``maybe_init_from_pretrained_checkpoint`` load the encoder, strictly (``StrictPartialInit``).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from omegaconf import DictConfig, ListConfig, open_dict

from nemo.utils import logging
from nemo.utils.model_utils import import_class_by_path
from nemo_streaming_ssl.data.manifest import ManifestError, ManifestReport, validate_manifest

from .alignment import require_ctc_alignable
from .ctc_model import StrictInitCTCBPEModel, StrictInitCTCModel, selected_keys
from .pretrained_config import PretrainedMismatchError, finetune_module_configs
from .tokenizer import build_tokenizer
from .transcripts import char_vocabulary, require_in_vocabulary, require_transcripts

DATASET_KEYS = ("train_ds", "validation_ds", "test_ds")
# Downloads a model from the cloud / loads a Lightning checkpoint non-strictly: neither is allowed here.
REFUSED_INIT_KEYS = ("init_from_pretrained_model", "init_from_ptl_ckpt")


def manifest_paths(dataset_cfg: DictConfig) -> list[str]:
    """NeMo accepts one path, a comma-separated string or a list."""
    value = dataset_cfg.manifest_filepath
    paths = value.split(",") if isinstance(value, str) else list(value)
    return [p.strip() for p in paths if p.strip()]


def uses_tokenizer(cfg: DictConfig) -> bool:
    """Subword model (``model.tokenizer`` set) or char model (``model.labels``)."""
    return cfg.model.get("tokenizer") is not None


def validate_asr_manifests(cfg: DictConfig) -> dict[str, list[ManifestReport]]:
    """Probe every audio file of ``cfg.model.{train_ds,validation_ds,test_ds}``; every transcript must be non-empty."""
    reports = {}
    for name in DATASET_KEYS:
        dataset = cfg.model.get(name)
        if dataset is None or dataset.get("manifest_filepath") is None:
            continue
        reports[name] = []
        for path in manifest_paths(dataset):
            report = validate_manifest(path, cfg.model.sample_rate, dataset.get("min_duration"), dataset.get("max_duration"))
            require_transcripts(report)
            logging.info(f"model.{name}: {report.summary()}")
            reports[name].append(report)
    if "train_ds" not in reports:
        raise ManifestError("model.train_ds.manifest_filepath is not set: give the training manifest")
    return reports


def prepare_vocabulary(cfg: DictConfig, reports: dict[str, list[ManifestReport]]) -> None:
    """Subword: build the tokenizer from the training transcripts when ``model.tokenizer.dir`` is null.
    Char: derive ``model.labels`` from them when null; every transcript must be written in the labels.
    """
    if uses_tokenizer(cfg):
        if cfg.model.tokenizer.get("dir") is None:
            build = cfg.tokenizer_build
            if build.get("dir") is None:
                raise ValueError("model.tokenizer.dir is null: set tokenizer_build.dir, where to write the new tokenizer")
            out_dir = build_tokenizer(reports["train_ds"], build.dir, build.vocab_size, build.model_type)
            cfg.model.tokenizer.dir = str(out_dir)
        return
    labels = list(cfg.model.get("labels") or char_vocabulary(reports["train_ds"]))
    for dataset_reports in reports.values():
        for report in dataset_reports:
            require_in_vocabulary(report, labels)
    with open_dict(cfg.model):
        cfg.model.labels = labels
    logging.info(f"char vocabulary ({len(labels)}): {''.join(labels)!r}")


def pretrained_path(cfg: DictConfig) -> Path:
    path = Path(cfg.pretrained_nemo)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_nemo={path}: no such file; give the .nemo written by the NEST pretraining")
    return path


def apply_pretrained_modules(cfg: DictConfig) -> None:
    """Fill ``cfg.model.encoder`` and ``cfg.model.preprocessor`` from the pretrained ``.nemo`` (plus validated overrides)."""
    path = pretrained_path(cfg)
    pretrained_cfg = StrictInitCTCModel.restore_from(str(path), return_config=True)
    target = pretrained_cfg.get("target")
    try:
        import_class_by_path(target)
    except Exception as exc:  # any import failure means NeMo could not rebuild the pretrained model
        raise PretrainedMismatchError(
            f"{path} was saved by class {target!r}, which cannot be imported here ({exc}); run from the project "
            "root with PYTHONPATH=. (or install the project) so NeMo can restore it"
        ) from exc
    encoder, preprocessor = finetune_module_configs(
        pretrained_cfg, cfg.model.get("encoder"), cfg.model.get("preprocessor"), source=str(path)
    )
    if preprocessor.sample_rate != cfg.model.sample_rate:
        raise PretrainedMismatchError(
            f"model.sample_rate={cfg.model.sample_rate} but {path} was trained at {preprocessor.sample_rate} Hz; "
            f"set model.sample_rate={preprocessor.sample_rate} and resample the audio to it"
        )
    with open_dict(cfg.model):
        cfg.model.encoder = encoder
        cfg.model.preprocessor = preprocessor


def check_encoder_init(cfg: DictConfig, model) -> None:
    """Require ``init_from_nemo_model`` to load every encoder weight, and from ``pretrained_nemo`` only."""
    for key in REFUSED_INIT_KEYS:
        if cfg.get(key) is not None:
            raise ValueError(f"{key} is not supported here; initialise from a local .nemo with init_from_nemo_model")
    entries = cfg.get("init_from_nemo_model")
    if not isinstance(entries, DictConfig):
        raise ValueError(
            "init_from_nemo_model must map names to {path, include, exclude}, e.g. "
            "{nest: {path: ${pretrained_nemo}, include: [encoder.]}}; a bare path loads the whole pretrained model non-strictly"
        )
    source = pretrained_path(cfg).resolve()
    encoder_keys = {k for k in model.state_dict() if k.startswith("encoder.")}
    covered = set()
    for name, entry in entries.items():
        for key in ("include", "exclude"):
            if not isinstance(entry.get(key, []), (list, ListConfig)):
                raise ValueError(f"init_from_nemo_model.{name}.{key} must be a list of key substrings, e.g. [encoder.]")
        include = list(entry.get("include", [""]))
        exclude = list(entry.get("exclude", []))
        chosen = selected_keys(encoder_keys, include, exclude)
        if chosen and Path(entry.path).resolve() != source:
            raise ValueError(
                f"init_from_nemo_model.{name} loads encoder weights from {entry.path}, but the encoder config comes "
                f"from pretrained_nemo={source}; point it at ${{pretrained_nemo}}"
            )
        covered |= chosen
    if missing := sorted(encoder_keys - covered):
        raise ValueError(
            f"init_from_nemo_model leaves {len(missing)} encoder weights untrained, e.g. {missing[:3]}; "
            "include 'encoder.' (and exclude none of its weights)"
        )


def build_finetune_model(cfg: DictConfig, trainer: Trainer | None = None) -> StrictInitCTCModel | StrictInitCTCBPEModel:
    """The streaming CTC model of ``cfg`` (the whole fine-tuning config), encoder loaded from ``cfg.pretrained_nemo``."""
    apply_pretrained_modules(cfg)
    reports = validate_asr_manifests(cfg)
    prepare_vocabulary(cfg, reports)
    model_class = StrictInitCTCBPEModel if uses_tokenizer(cfg) else StrictInitCTCModel
    model = model_class(cfg=cfg.model, trainer=trainer)
    require_ctc_alignable(model, reports, unk_id=model.tokenizer.unk_id if uses_tokenizer(cfg) else None)
    check_encoder_init(cfg, model)
    model.maybe_init_from_pretrained_checkpoint(cfg)
    return model
