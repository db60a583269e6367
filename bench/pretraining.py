"""Pre-training a small GPT from scratch on this machine's CPU (issue 16): held-out perplexity before training and
after N minutes, and training tokens a second.

The corpus needs no download: the documentation of Python's standard library as plain text (`pydoc`'s text
renderer over the modules this Python has), cut to --corpus-mb, with control characters removed. The trainer is
the store's own (`apps.tuning.trainer`, method `scratch`): packed blocks, warm-up and cosine decay, gradient
clipping, the held-out split (the last 5% of the blocks). Training stops after --minutes (or --max-steps); the
cosine schedule spans the steps that fit in the time (measured on a few warm-up steps first), so the learning rate
has decayed when the time is up.

    .venv/bin/python bench/pretraining.py --preset tiny --minutes 4 --corpus-mb 1
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import pydoc
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def python_docs(limit_bytes: int) -> str:
    """The standard library's documentation as plain text, module after module, up to `limit_bytes`."""
    warnings.simplefilter("ignore")
    parts, size = [], 0
    names = sorted(m.name for m in pkgutil.iter_modules() if m.module_finder.path.startswith(sys.base_prefix)
                   and not m.name.startswith("_") and "test" not in m.name and m.name not in ("antigravity", "this", "idlelib"))
    for name in names:
        try:
            text = pydoc.render_doc(name, renderer=pydoc.plaintext)
        except BaseException:  # noqa: BLE001 - a module that fails to import is skipped
            continue
        text = CONTROL.sub("", text)
        parts.append(text)
        size += len(text.encode())
        if size >= limit_bytes:
            break
    corpus = "\n\n".join(parts)
    return corpus.encode()[:limit_bytes].decode(errors="ignore")


class TimedReporter:
    """Prints each logged step; stops training after the time budget."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.rows = seconds, None, []

    def on_start(self, *, total_steps, resumed_from_step):
        self.started = time.monotonic()
        print(f"training: up to {total_steps} steps", flush=True)

    def on_step(self, *, step, total_steps, metrics):
        self.rows.append({"step": step, **metrics})
        if "eval_loss" in metrics or step % 2 == 0:
            print(f"step {step}/{total_steps} " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)

    def on_checkpoint(self, *, step, path):
        pass

    def should_stop(self):
        return self.started is not None and time.monotonic() - self.started >= self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--tokenizer", default="base", choices=("base", "bpe"))
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--corpus-mb", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, help="train this many steps (no speed probe); --minutes still stops it")
    parser.add_argument("--base-model", help="a folder with the base tokenizer (default: the registry's base model)")
    args = parser.parse_args()
    os.environ.setdefault("TORCH_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from apps.tuning.trainer.presets import PRESETS, parameter_count, perplexity
    from apps.tuning.trainer.train import TrainConfig, fit, setup

    base = args.base_model or _base_folder()
    work = Path(tempfile.mkdtemp(prefix="bench-pretraining-"))
    corpus = python_docs(int(args.corpus_mb * 2**20))
    (work / "corpus.txt").write_text(corpus)
    preset = PRESETS[args.preset]
    print(f"corpus: {len(corpus.encode()):,} bytes of Python's documentation; preset {args.preset} "
          f"({parameter_count(args.preset) / 1e6:.1f} M parameters with the base tokenizer); tokenizer {args.tokenizer}")

    def config(max_steps):
        return TrainConfig(base_model=base, train_file=str(work / "corpus.txt"), output_dir=str(work / "out"),
                           work_dir=str(work / f"ckpt-{max_steps}"), method="scratch", preset=args.preset,
                           tokenizer=args.tokenizer, batch_size=args.batch_size, n_epochs=1, max_steps=max_steps,
                           learning_rate=preset.learning_rate, save_steps=10**6, eval_steps=10**6, warmup_ratio=0.05)

    steps = args.max_steps or _steps_in(args, config, preset)

    reporter = TimedReporter(args.minutes * 60 * 1.15)  # a margin: the schedule was sized on a noisy machine
    trainer, bridge, _ = setup(config(steps), reporter)
    held_out_tokens = len(trainer.eval_dataset) * preset.context
    started = time.monotonic()
    result = fit(trainer, bridge, resume=None)
    seconds = time.monotonic() - started
    after = result.val_loss_after if result.val_loss_after is not None else float(trainer.evaluate()["eval_loss"])
    rates = [r["tokens_per_second"] for r in reporter.rows if "tokens_per_second" in r]
    figures = {
        "preset": args.preset, "tokenizer": args.tokenizer, "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "corpus_bytes": len(corpus.encode()), "train_blocks": len(trainer.train_dataset), "held_out_tokens": held_out_tokens,
        "steps": result.steps, "tokens_trained": result.tokens_seen, "seconds_total": round(seconds, 1),
        "tokens_per_second": round(rates[-1], 1) if rates else None,
        "perplexity_before": round(perplexity(result.val_loss_before), 1), "perplexity_after": round(perplexity(after), 2),
        "threads": args.threads,
    }
    print(json.dumps(figures, indent=2))


def _steps_in(args, config, preset) -> int:
    """A few steps to measure the speed: the steps that fit in --minutes (the cosine schedule spans them)."""
    from apps.tuning.trainer.train import setup

    trainer, _, _ = setup(config(4), TimedReporter(3600))
    started = time.monotonic()
    trainer.train()
    step_seconds = (time.monotonic() - started) / 4
    steps = max(10, int(args.minutes * 60 / step_seconds))
    print(f"one step of {args.batch_size} x {preset.context} tokens: {step_seconds:.2f} s -> {steps} steps in "
          f"{args.minutes} min", flush=True)
    return steps


def _base_folder() -> str:
    """The registry's base model version folder (its tokenizer), found without Django."""
    root = Path(os.environ.get("MODELS_REGISTRY_ROOT", Path(__file__).resolve().parent.parent / "models_registry"))
    candidates = sorted(root.glob("smollm2-135m-instruct/*/tokenizer.json"))
    if not candidates:
        sys.exit(f"no base model under {root}: run `make run` once (it imports the base model), or pass --base-model")
    return str(candidates[-1].parent)


if __name__ == "__main__":
    main()
