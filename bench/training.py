"""Training benchmark: tokens/s of LoRA and full fine-tuning of the base model on this machine (and on CUDA).

    .venv/bin/python bench/training.py                # base model from the registry (make run imports it)
    .venv/bin/python bench/training.py --steps 6

Each method trains `--steps` steps of `--batch` chat examples (about 100 tokens each) with the store's own
trainer (apps/tuning/trainer), after one warm-up step that is not counted. Results: a table here, JSON in
bench/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Clock:
    """Trainer reporter that times steps after the first (model loading and warm-up are not training speed)."""

    def __init__(self):
        self.rates, self.losses = [], []

    def on_start(self, *, total_steps, resumed_from_step):
        pass

    def on_step(self, *, step, total_steps, metrics):
        if "loss" in metrics:
            self.losses.append(metrics["loss"])
            if step > 1:
                self.rates.append(metrics["tokens_per_second"])

    def on_checkpoint(self, *, step, path):
        pass

    def should_stop(self):
        return False


def dataset(path: Path, n: int = 64) -> None:
    topics = ["the weather", "cats", "cooking rice", "the sea", "colors", "Paris", "music", "trees"]
    rows = [
        {"messages": [{"role": "user", "content": f"Tell me something about {topics[i % 8]}, please, in a few words."},
                      {"role": "assistant", "content": f"Arr, matey! {topics[i % 8].capitalize()} be a fine thing to talk about on a long voyage."}]}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def main() -> None:
    import torch

    from apps.tuning.trainer.train import TrainConfig, run_training

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models_registry" / "smollm2-135m-instruct" / "1")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        sys.exit(f"{args.model_dir} has no model: run `make run` (or manage.py import_base_model) first")
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        dataset(data)
        for method in args.methods.split(","):
            print(f"{method} ...", flush=True)
            clock = Clock()
            started = time.perf_counter()
            run_training(
                TrainConfig(base_model=str(args.model_dir), train_file=str(data), output_dir=f"{tmp}/{method}-out",
                            work_dir=f"{tmp}/{method}-work", method=method, batch_size=args.batch, n_epochs=100,
                            max_steps=args.steps + 1, save_steps=10_000, max_length=256),
                clock,
            )
            rate = sum(clock.rates) / len(clock.rates) if clock.rates else float("nan")
            runs.append({"method": method, "device": device, "tokens_per_second": rate, "steps": args.steps,
                         "batch": args.batch, "first_loss": clock.losses[0], "last_loss": clock.losses[-1],
                         "wall_seconds": time.perf_counter() - started})
    print(f"\n{'method':8} {'device':22} {'tokens/s':>9} {'loss first → last':>20}")
    for r in runs:
        print(f"{r['method']:8} {r['device']:22} {r['tokens_per_second']:9.0f} {r['first_loss']:9.3f} → {r['last_loss']:.3f}")
    if len(runs) == 2:
        print(f"full / lora: {runs[1]['tokens_per_second'] / runs[0]['tokens_per_second']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "runs": runs}, indent=2))
    print(f"written to {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
