#!/usr/bin/env python3
"""Training-step time of streaming NEST vs NeMo's stock NEST of the same size, side by side.

    python scripts/bench_training.py --preset small --modes causal lookahead --batch 4 --seconds 8 --repeats 12
    python scripts/render_bench_tables.py bench_out/bench_training/results.json   # the docs' table

Both models get the same batches; each step is forward (with masking) + loss + backward + AdamW step.
Steps alternate between the two models (order swapped every step) after a warm-up, and the ratio of the
median step times (streaming / stock) is printed per mode; the goal is <= 1.10. Writes
``<out-dir>/results.json`` (nemo_streaming_ssl.bench). Stock NEST is
``EncDecDenoiseMaskedTokenPredModel`` built from conf/nest_fast-conformer_offline.yaml (bidirectional
encoder, BatchNorm, utterance-normalized features, RandomBlockMasking), the streaming model from
conf/nest_fast-conformer_streaming.yaml with the chosen mode. Runs on CUDA when available.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a file from a checkout (the nemo_toolkit wheel ships its own top-level `scripts` package).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel  # noqa: E402

from nemo_streaming_ssl.bench import BenchRun, add_common_options  # noqa: E402
from nemo_streaming_ssl.config import compose_config  # noqa: E402
from nemo_streaming_ssl.models import StreamingNESTModel  # noqa: E402

GOAL_RATIO = 1.10  # median training step, streaming / stock


def model_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The resolved ``model`` node of one of the repository's configs, without data sections."""
    model = OmegaConf.to_container(compose_config(config_name, overrides).model, resolve=True)
    del model["train_ds"], model["validation_ds"]
    return OmegaConf.create(model)


def make_batches(num: int, batch: int, seconds: float, sample_rate: int, device: torch.device, seed: int
                 ) -> list[dict]:
    """Synthetic audio batches (varied lengths, padded) shared by both models: (B, S) audio and (B,) lengths."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * sample_rate)
    batches = []
    for _ in range(num):
        lengths = torch.randint(samples // 2, samples + 1, (batch,), generator=generator)
        lengths[0] = samples
        audio = torch.randn(batch, samples, generator=generator) * 0.1
        audio *= (torch.arange(samples) < lengths.unsqueeze(1)).float()
        noisy = audio + torch.randn(batch, samples, generator=generator) * 0.01
        batches.append(
            dict(
                input_signal=audio.to(device),
                input_signal_length=lengths.to(device),
                noisy_input_signal=noisy.to(device),
                noisy_input_signal_length=lengths.to(device),
            )
        )
    return batches


class Stepper:
    """One model with its optimizer; ``step`` runs a full training step and returns its wall time in seconds."""

    def __init__(self, model, device: torch.device):
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.device = device

    def step(self, batch: dict) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        log_probs, encoded_len, masks, tokens = self.model(**batch, apply_mask=True)
        loss = self.model.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=encoded_len)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def bench_mode(mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Step times of the streaming model of ``mode`` and a fresh stock NEST, steps alternating on the same batches."""
    torch.manual_seed(args.seed)  # each mode's models start from what a run of that mode alone would build
    size = [f"preset={args.preset}"]
    streaming_cfg = model_config("nest_fast-conformer_streaming", [*size, f"mode={mode}"])
    streaming = Stepper(StreamingNESTModel(streaming_cfg), device)
    stock = Stepper(EncDecDenoiseMaskedTokenPredModel(model_config("nest_fast-conformer_offline", size)), device)
    params = sum(p.numel() for p in streaming.model.parameters())
    print(f"device {device}, preset {args.preset} ({params / 1e6:.1f}M params), mode {mode}, "
          f"batch {args.batch} x {args.seconds:g} s, {args.repeats} timed steps each")

    batches = make_batches(args.warmup + args.repeats, args.batch, args.seconds, 16000, device, args.seed)
    times = {"streaming": [], "stock": []}
    for i, batch in enumerate(tqdm(batches, desc="interleaved steps")):
        order = [("streaming", streaming), ("stock", stock)]
        for name, stepper in order if i % 2 == 0 else order[::-1]:
            seconds = stepper.step(batch)
            if i >= args.warmup:
                times[name].append(seconds)

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:>9}: median step {value * 1000:.1f} ms (min {min(times[name]) * 1000:.1f} ms)")
    ratio = medians["streaming"] / medians["stock"]
    print(f"ratio streaming / stock: {ratio:.3f} (goal <= {GOAL_RATIO:.2f})")
    return {
        "mode": mode,
        "params": params,
        "step_seconds": times,
        "median_step_s": medians,
        "fastest_step_s": {name: min(values) for name, values in times.items()},
        "streaming_over_stock": ratio,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="tiny|small|medium|large|xlarge (conf/preset)")
    parser.add_argument("--modes", nargs="+", default=["causal"],
                        help="causal|lookahead|left_context|multi_latency (conf/mode), one comparison each")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="longest utterance of a batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    add_common_options(parser, "bench_training", repeats=12,
                       counts="a round is one training step of each model on the same batch; the ratio of the "
                       "median step times counts (the batches' lengths differ)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    run = BenchRun("bench_training", __file__, argv, args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [bench_mode(mode, args, device) for mode in args.modes]
    print(f"wrote {run.write({'goal_streaming_over_stock': GOAL_RATIO, 'modes': rows}, device=str(device))}")


if __name__ == "__main__":
    main()
