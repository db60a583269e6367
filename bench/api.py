"""API benchmark: what the HTTP layers cost. The same greedy generation through the live store (uvicorn, ASGI,
DRF, server-sent events, the official `openai` client) against the engine called in-process, as ratios in one
run; and the rate of plain reads of both faces under concurrent clients.

    .venv/bin/python bench/api.py                 # the embedded store of `make run` (var/); imports the model if needed
    .venv/bin/python bench/api.py --tokens 64 --clients 4

Results: a table here, JSON in bench/results/api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
THREADS = "2"  # torch threads, in this process and in the server alike (the Procfile's web process has 2)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
os.environ.update(TORCH_NUM_THREADS=THREADS, OMP_NUM_THREADS=THREADS)
MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}]


def timed_stream(events) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s, tokens) of an iterator that yields once per token."""
    started = time.perf_counter()
    stamps = [time.perf_counter() for _ in events]
    return stamps[0] - started, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def direct_runner(tokens: int):
    """One greedy generation by the engine in this process, the model loaded."""
    from django.conf import settings

    from apps.inference.services import engine_get, generation_request_build
    from apps.inference.types import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    request = generation_request_build(user=None, reference=settings.BASE_MODEL_ID, messages=MESSAGES, params=params)
    engine = engine_get()
    engine.generate(request)  # warm-up: loads the model
    return lambda: timed_stream(e for e in engine.stream(request) if e.delta)


def v1_runner(url: str, key: str, tokens: int):
    """The same generation through the live store's /v1, streamed, with the official client."""
    import openai

    from django.conf import settings

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)

    def once():
        chunks = client.chat.completions.create(model=settings.BASE_MODEL_ID, messages=MESSAGES, max_tokens=tokens, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True})
        return (c for c in chunks if c.choices and c.choices[0].delta.content)

    list(once())  # warm-up: the server loads the model
    return lambda: timed_stream(once())


def read_rate(url: str, key: str, path: str, clients: int, seconds: float) -> dict:
    import requests

    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def client():
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            response = session.get(url + path, timeout=30)
            response.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"requests_per_s": len(latencies) / (time.perf_counter() - started), "median_ms": 1000 * statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from apps.accounts.models import User
    from apps.accounts.services import api_key_create
    from tests.live import free_port, wait_for

    call_command("migrate", verbosity=0)
    call_command("import_base_model")
    call_command("seed_store")
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench", "bench@example.com", None)
    key = api_key_create(user=user, name="bench")[1]

    port = free_port()
    env = dict(os.environ, RATE_LIMIT_KEY_REQUESTS="1000000", RATE_LIMIT_USER_REQUESTS="1000000")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "store.asgi:application", "--port", str(port), "--lifespan", "off", "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.error
        import urllib.request

        def answers():
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2)
            except urllib.error.HTTPError:
                return True  # 503 is an answer: no worker runs here
            except OSError:
                return False
            return True

        wait_for(answers, timeout=120, what="the store to answer")
        # Interleaved, so that the machine's noise falls on both alike; the server idles while the engine runs.
        run_direct, run_v1 = direct_runner(args.tokens), v1_runner(url, key, args.tokens)
        in_process, served = [], []
        for i in range(args.repeats):
            print(f"generation {i + 1}/{args.repeats} ...", flush=True)
            in_process.append(run_direct())
            served.append(run_v1())
        reads = {path: read_rate(url, key, path, args.clients, args.seconds)
                 for path in ("/v1/models", "/api/v1/apps/?limit=20", "/api/v1/models/")}
    finally:
        server.terminate()
        server.wait(timeout=30)

    def median(runs, i):
        return statistics.median(r[i] for r in runs)

    result = {
        "tokens": args.tokens, "repeats": args.repeats, "clients": args.clients,
        "direct": {"ttft_s": median(in_process, 0), "decode_tps": median(in_process, 1)},
        "v1_stream": {"ttft_s": median(served, 0), "decode_tps": median(served, 1)},
        "reads": reads,
    }
    result["ratios"] = {
        "ttft_v1_over_direct": result["v1_stream"]["ttft_s"] / result["direct"]["ttft_s"],
        "decode_v1_over_direct": result["v1_stream"]["decode_tps"] / result["direct"]["decode_tps"],
    }
    out = ROOT / "bench" / "results" / "api.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    d, v = result["direct"], result["v1_stream"]
    print("\n| path | time to first token | decode tokens/s |\n| --- | --- | --- |")
    print(f"| engine, in process | {d['ttft_s'] * 1000:.0f} ms | {d['decode_tps']:.1f} |")
    print(f"| /v1/chat/completions, streamed, openai client | {v['ttft_s'] * 1000:.0f} ms "
          f"({result['ratios']['ttft_v1_over_direct']:.2f}x) | {v['decode_tps']:.1f} ({result['ratios']['decode_v1_over_direct']:.2f}x) |")
    print(f"\n| read, {args.clients} clients | requests/s | median latency |\n| --- | --- | --- |")
    for path, r in reads.items():
        print(f"| GET {path} | {r['requests_per_s']:.0f} | {r['median_ms']:.1f} ms |")
    print(f"\nJSON: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
