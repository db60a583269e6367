"""How often do the base model's greedy answers change between GGUF quantization types? q4_1 against q8_0.

    .venv/bin/python bench/gguf_quant.py                       # the base model from the registry (make run imports it)
    .venv/bin/python bench/gguf_quant.py --model-dir PATH --tokens 48 --engine transformers

q8_0 is the store's GGUF export of the base model's safetensors (apps/inference/gguf_export.ensure_gguf, cached
beside the version); q4_1 is what `INFERENCE_GGUF_QUANT=q4_1` serves for the base: the wheel's own Q4_1 file. Each
of the prompts below is answered greedily through the chat template on both files and the answers are compared
(exactly, and by the first token where they part). `--engine llamacpp` (the default where llama-cpp-python is
installed) decodes with llama.cpp; `--engine transformers` loads each GGUF file's weights, dequantized, into the
transformers model, which measures what the quantized weights alone change. Prints a table; JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 12 times 7?",
    "Translate 'good morning' into Spanish.",
    "Name three primary colors.",
    "What does a CPU do?",
    "Suggest a name for a small coffee shop.",
    "How many days are there in a leap year?",
    "Summarize the story of Cinderella in two sentences.",
    "What is the boiling point of water at sea level?",
    "Write a short thank-you note to a teacher.",
    "Why is the sky blue?",
    "List two benefits of regular exercise.",
    "What is the largest planet in the solar system?",
    "Give an example of a renewable energy source.",
    "How do I make a cup of tea?",
    "What is the opposite of 'ancient'?",
    "Tell me a fun fact about octopuses.",
]


def default_model_dir() -> Path:
    """The base model's newest version in the registry the store uses (MODELS_REGISTRY_ROOT, else models_registry/)."""
    import os

    root = Path(os.environ.get("MODELS_REGISTRY_ROOT") or ROOT / "models_registry")
    versions = sorted((root / "smollm2-135m-instruct").glob("[0-9]*"), key=lambda p: int(p.name))
    if not versions:
        sys.exit(f"no base model under {root}: run `make run` once, or `python manage.py import_base_model`")
    return versions[-1]


def chat_prompts(model_dir: Path) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in PROMPTS]


def answers_llamacpp(gguf: Path, prompts: list[str], tokens: int, threads: int) -> list[list[int]]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, verbose=False)
    out = []
    try:
        for text in prompts:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            llm.reset()
            answer = []
            for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
                if llm.token_eos() == token or len(answer) >= tokens:
                    break
                answer.append(int(token))
                if token in (1, 2):  # <|im_start|>, <|im_end|>: the end of the assistant's turn
                    break
            out.append(answer)
    finally:
        llm.close()
    return out


def gguf_weights_into(model, gguf: Path) -> None:
    """Load a GGUF file's weights, dequantized, into a transformers model of the same architecture (q and k rows
    back in Hugging Face's order): the model then computes with exactly the quantized weights."""
    import gguf as gguf_lib
    import numpy as np
    import torch

    from apps.inference.gguf_export import read_gguf_header

    config = model.config
    names = gguf_lib.get_tensor_name_map(gguf_lib.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    _, tensors = read_gguf_header(gguf)
    infos = {t.name: t for t in tensors}
    data = np.memmap(gguf, dtype=np.uint8, mode="r")
    state = model.state_dict()
    with torch.no_grad():
        for hf_name, tensor in state.items():
            if hf_name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            info = infos[names.get_name(hf_name, try_suffixes=(".weight", ".bias"))]
            cols, rows = info.shape[0], int(np.prod(info.shape[1:]))
            block, size = gguf_lib.GGML_QUANT_SIZES[info.type]
            raw = np.asarray(data[info.offset:info.offset + rows * cols // block * size]).reshape(rows, -1)
            weights = gguf_lib.quants.dequantize(raw, info.type).reshape(tensor.shape).astype(np.float32)
            heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
            for proj, n_head in heads.items():
                if hf_name.endswith(f"self_attn.{proj}.weight"):  # undo llama.cpp's row order
                    weights = weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, -1).swapaxes(1, 2).reshape(
                        tensor.shape)
            tensor.copy_(torch.from_numpy(weights))


def answers_transformers(gguf: Path, model_dir: Path, prompts: list[str], tokens: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gguf_weights_into(model, gguf)
    # All prompts in one batch, padded on the left (greedy: each row decodes as it would alone, up to float noise).
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=tokens, do_sample=False, eos_token_id=[1, 2],
                                   pad_token_id=tokenizer.pad_token_id)
    out = []
    for row in generated[:, batch["input_ids"].shape[1]:]:
        answer = []
        for token in row.tolist():
            if token in (1, 2):
                break
            answer.append(int(token))
        out.append(answer)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=48, help="longest answer (tokens)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=["llamacpp", "transformers"],
                        default="llamacpp" if importlib.util.find_spec("llama_cpp") else "transformers")
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir()

    import torch
    from transformers import AutoTokenizer

    from apps.inference.gguf_export import ensure_gguf, find_wheel_gguf

    started = time.perf_counter()
    files = {"q8_0": ensure_gguf(model_dir, "q8_0"), "q4_1": find_wheel_gguf()}
    export_s = time.perf_counter() - started
    prompts = chat_prompts(model_dir)
    answers = {}
    for quant, path in files.items():
        if args.engine == "llamacpp":
            answers[quant] = answers_llamacpp(path, prompts, args.tokens, args.threads)
        else:
            torch.set_num_threads(args.threads)
            answers[quant] = answers_transformers(path, model_dir, prompts, args.tokens)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for prompt, a, b in zip(PROMPTS, answers["q8_0"], answers["q4_1"], strict=True):
        parted = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"prompt": prompt, "same": a == b, "parted_at": parted,
                     "q8_0": tokenizer.decode(a), "q4_1": tokenizer.decode(b)})
    differ = sum(not r["same"] for r in rows)
    print(f"engine {args.engine}, {len(rows)} prompts, greedy, up to {args.tokens} tokens; "
          f"q8_0 export took {export_s:.1f} s (cached after the first run)")
    print("| prompt | same | parted at token | q8_0 | q4_1 |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        short = [t.replace("\n", " ")[:60] for t in (r["q8_0"], r["q4_1"])]
        print(f"| {r['prompt'][:40]} | {'yes' if r['same'] else 'no'} | {r['parted_at'] if r['parted_at'] is not None else ''} "
              f"| {short[0]} | {short[1]} |")
    print(f"\nq4_1's greedy answer differs from q8_0's on {differ} of {len(rows)} prompts")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "gguf_quant.json").write_text(json.dumps(
        {"engine": args.engine, "tokens": args.tokens, "differ": differ, "prompts": len(rows), "rows": rows,
         "files": {k: str(v) for k, v in files.items()}}, indent=2))


if __name__ == "__main__":
    main()
