"""A SentencePiece tokenizer trained locally on the training transcripts (NeMo's ``create_spt_model``; no download)."""

from __future__ import annotations

from pathlib import Path

from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

from nemo_streaming_ssl.data.manifest import ManifestReport


def build_tokenizer(reports: list[ManifestReport], out_dir: str | Path, vocab_size: int, model_type: str) -> Path:
    """Train ``out_dir/tokenizer.model`` (+ ``vocab.txt``) on the transcripts of ``reports``; return ``out_dir``.

    ``vocab_size`` is an upper bound (SentencePiece stops earlier on a small corpus). Text is used as written.
    """
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.model").exists():
        # create_spt_model would silently reuse it, whatever transcripts it was trained on.
        raise FileExistsError(
            f"{out_dir}/tokenizer.model already exists; set model.tokenizer.dir={out_dir} to reuse it, or remove it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = out_dir / "train_text.txt"
    text_file.write_text("".join(entry.text + "\n" for report in reports for entry in report.entries), encoding="utf-8")
    create_spt_model(
        str(text_file), vocab_size, sample_size=-1, do_lower_case=False, tokenizer_type=model_type, output_dir=str(out_dir)
    )
    return out_dir
