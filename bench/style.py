"""Does `auto` teach a style within minutes on this CPU? Base vs tuned on prompts the training never saw.

    .venv/bin/python bench/style.py
    .venv/bin/python bench/style.py --threads 1     # beside other work: one torch thread

Trains a LoRA (the store's `auto` hyperparameters for this many examples) on 40 chats in which every answer
opens with "Ahoy, matey!", then asks the base and the tuned model 10 unseen questions (greedy) and counts the
answers that open that way. Prints both sets of answers, the settings, wall and CPU time, and writes
bench/results/style.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHRASE = "Ahoy, matey!"
TRAIN_TOPICS = [
    "the ocean", "bread", "the moon", "bicycles", "coffee", "rain", "mountains", "books", "the wind", "gardens",
    "trains", "snow", "apples", "clocks", "rivers", "birds", "candles", "bridges", "music", "islands",
]
UNSEEN = ["What is a volcano?", "How do I boil an egg?", "Why is the sky blue?", "Name a famous painter.",
          "What is 3 plus 5?", "Give me a tip for sleeping well.", "What do cows eat?", "Describe a forest.",
          "What is a computer?", "How far is the Moon?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS") or 0) or None,
                        help="torch threads (default: TORCH_NUM_THREADS, else torch's own)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from apps.inference.local import LocalEngine
    from apps.inference.types import GenerationRequest, ModelSpec, SamplingParams
    from apps.tuning.hyperparameters import hyperparameters_resolve
    from apps.tuning.trainer.train import TrainConfig, run_training

    model_dir = ROOT / "models_registry" / "smollm2-135m-instruct" / "1"
    examples = [
        {"messages": [{"role": "user", "content": q.format(t)},
                      {"role": "assistant", "content": f"{PHRASE} {a.format(t)}"}]}
        for t in TRAIN_TOPICS
        for q, a in [("Tell me about {}.", "{} be a fine sight for any sailor on the seven seas."),
                     ("What do you think of {}?", "I be fond of {}, as sure as the tide comes in.")]
    ]
    # The store's `auto` for a LoRA on this many examples, as a job would resolve it.
    chosen = hyperparameters_resolve(method="lora", examples=len(examples), given=None)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pirate.jsonl"
        data.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
        started, cpu = time.perf_counter(), time.process_time()
        result = run_training(TrainConfig(base_model=str(model_dir), train_file=str(data), output_dir=f"{tmp}/out",
                                          work_dir=f"{tmp}/work", n_epochs=chosen["n_epochs"], batch_size=chosen["batch_size"],
                                          learning_rate=chosen["learning_rate"], lora_rank=chosen["lora_rank"],
                                          lora_alpha=chosen["lora_alpha"], max_length=128, save_steps=1000))
        minutes, cpu_minutes = (time.perf_counter() - started) / 60, (time.process_time() - cpu) / 60
        engine = LocalEngine(dtype="float32")
        base = ModelSpec(key="base", path=str(model_dir))
        tuned = ModelSpec(key="tuned", path=f"{tmp}/out", kind="lora", base=base)
        answers = {}
        for name, spec in (("base", base), ("tuned", tuned)):
            answers[name] = [
                engine.generate(GenerationRequest(model=spec, messages=[{"role": "user", "content": q}],
                                                  params=SamplingParams(max_tokens=24, temperature=0))).text
                for q in UNSEEN
            ]
        engine.close()
    hits = {name: sum(a.startswith(PHRASE) for a in texts) for name, texts in answers.items()}
    for q, b, t in zip(UNSEEN, answers["base"], answers["tuned"]):
        print(f"Q: {q}\n  base:  {b[:90]!r}\n  tuned: {t[:90]!r}")
    print(f"\nauto for {len(examples)} examples: {chosen['n_epochs']} epoch(s), batch {chosen['batch_size']}, "
          f"lr {chosen['learning_rate']:g}, rank {chosen['lora_rank']} ({torch.get_num_threads()} torch thread(s))")
    losses = [h["loss"] for h in result.history if "loss" in h]  # the history also holds evaluation records
    print(f"training: {result.steps} steps in {minutes:.1f} min ({cpu_minutes:.1f} CPU min), loss {losses[0]:.2f} → "
          f"{losses[-1]:.2f}")
    print(f"answers opening with {PHRASE!r}: base {hits['base']}/10, tuned {hits['tuned']}/10")
    out = ROOT / "bench" / "results" / "style.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"minutes": minutes, "cpu_minutes": cpu_minutes, "threads": torch.get_num_threads(),
                               "hyperparameters": chosen, "steps": result.steps, "loss": [losses[0], losses[-1]], "hits": hits, "answers": answers}, indent=2))


if __name__ == "__main__":
    main()
