"""bfloat16 linear layers on this CPU: as loaded, with `fit_for_cpu` (wide calls in float32 where oneDNN has no
bfloat16 kernels: apps/inference/quantize.py), with the model server's int8 decoding, and all float32.

    .venv/bin/python bench/cpu_bf16.py [--model models_registry/smollm2-135m-instruct/1] [--threads 2]

Times one forward pass (`logits_to_keep=1`, as the scheduler's prefill) on a 43-token chat prompt and on 516
tokens, a decoding-step-sized call of 8 sequences of one token, and one of one; medians of a few, in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models_registry" / "smollm2-135m-instruct" / "1",
                        help="a registry folder (make run imports the base model there)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (args.model / "config.json").exists():
        raise SystemExit(f"no model in {args.model}: run `make setup` first, or pass --model")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from apps.inference.quantize import bf16_matmul_native, fit_for_cpu, quantize_for_decoding

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    calls = {"prompt 43": prompt, "prompt 516": torch.cat([prompt] * 12, dim=1),
             "8 sequences x 1": prompt[:, :1].repeat(8, 1), "1 x 1": prompt[:, :1]}
    calls = {f"prompt {c.shape[1]}" if name.startswith("prompt") else name: c for name, c in calls.items()}

    def bf16():
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()

    variants = {"bfloat16 as loaded": bf16, "bfloat16, fit_for_cpu": lambda: fit_for_cpu(bf16()),
                "bfloat16, int8 decoding": lambda: quantize_for_decoding(bf16()),
                "float32": lambda: AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()}
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16 "
          f"matmul: {bf16_matmul_native()}, {args.threads} threads")
    print("| variant | " + " | ".join(calls) + " |")
    print("| --- |" + " ---: |" * len(calls))
    for name, make in variants.items():
        model, cells = make(), []
        with torch.inference_mode():
            for ids in calls.values():
                model(ids, logits_to_keep=1)
                times = []
                for _ in range(args.repeats if ids.shape[1] < 100 else 2):
                    started = time.perf_counter()
                    model(ids, logits_to_keep=1)
                    times.append(time.perf_counter() - started)
                cells.append(f"{statistics.median(times) * 1000:.0f} ms")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        del model


if __name__ == "__main__":
    main()
