"""Serving benchmark: the store started the way `make run` starts it (store/supervisor.py over the Procfile: web
processes, the model server, workers, beat) against a bare Django REST Framework list under gunicorn, as ratios in
one run.

    .venv/bin/python bench/serving.py                   # a store of its own in var/bench (imports the base model once)
    .venv/bin/python bench/serving.py --seconds 5 --tokens 32 --data-dir /tmp/bench-data

What it measures (issue 12):
1. Catalog reads, `GET /api/v1/apps/?limit=10` with an API key over 8 keep-alive connections, against the bare list
   (bench/bare: 10 rows, ListAPIView, gunicorn sync workers, as many processes as the store's web): requests/s,
   p50, p99, and the servers' CPU time per request; idle, and while 4 chat completions stream through web and the
   model server (the bare list measured under the same 4 streams too). The load client is ours (asyncio, raw
   HTTP/1.1) in spawned processes; it is checked on the bare list with 1 and 2 client processes.
2. Streaming: time to first token and decode tokens/s of one greedy chat completion, through web + model server
   (`/v1`, streamed) against the engine in this process on the same model and settings, interleaved.
3. 64 concurrent streamed chat completions through one web process (the Procfile's web line, one copy): each
   completes or gets a clean 429/503; web RSS after the 10th and after the 64th.
4. Web process RSS, and that no web process has torch mapped.

The bench store runs with per-user caps raised (RATE_LIMIT_*, RUN_MAX_CONCURRENT_STREAMS), so that the model
server's admission control, not the per-key stream cap, is what the 64 streams meet. Results: a markdown table
here, JSON in bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LIST_PATH = "/api/v1/apps/?limit=10"
BARE_PATH = "/items/"
THREADS = "2"  # torch threads in this process, as the Procfile gives the model server
QUIET_S = 1.0  # the pause before each streamed measurement
PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}]
# The bench store's caps: high enough that only the model server's own admission refuses.
RAISED_CAPS = {
    "RATE_LIMIT_KEY_REQUESTS": "10000000", "RATE_LIMIT_USER_REQUESTS": "10000000",
    "RATE_LIMIT_KEY_TOKENS": "1000000000", "RATE_LIMIT_USER_TOKENS": "1000000000",
    "RUN_MAX_CONCURRENT_STREAMS": "1000",
}


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------- HTTP client --
async def _response(reader: asyncio.StreamReader, on_chunk=None) -> tuple[int, dict, bytes]:
    """Reads one HTTP/1.1 response: (status, headers, body). `on_chunk(bytes)` sees a chunked body as it comes."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
    body = []
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
            body.append(data)
            if on_chunk:
                on_chunk(data)
    elif "content-length" in headers:
        body.append(await reader.readexactly(int(headers["content-length"])))
    else:
        body.append(await reader.read())
        headers["connection"] = "close"
    return status, headers, b"".join(body)


def _request(method: str, host: str, port: int, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _reader_connection(host, port, request, start, warm_until, deadline, out):
    """One keep-alive connection sending GETs back to back; reconnects when the server closes (gunicorn's sync
    workers close after every response, as they do for wrk)."""
    writer = None
    await asyncio.sleep(max(0.0, start - time.time()))
    while time.time() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            began, t0 = time.time(), time.perf_counter()
            writer.write(request)
            status, headers, _ = await _response(reader)
            if began >= warm_until:
                out["latencies"].append(time.perf_counter() - t0)
                out["statuses"][status] = out["statuses"].get(status, 0) + 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["errors"].append(repr(exc))
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def _load_process(host, port, path, headers, connections, start, warm, seconds) -> dict:
    """One client process (spawned): `connections` connections on one uvloop event loop."""
    import uvloop

    request = _request("GET", host, port, path, {"Accept": "application/json", **headers})
    out = {"latencies": [], "statuses": {}, "errors": []}
    cpu = time.process_time()
    async def run():
        await asyncio.gather(*(_reader_connection(host, port, request, start, start + warm, start + warm + seconds, out)
                               for _ in range(connections)))

    uvloop.run(run())
    out["cpu_s"] = time.process_time() - cpu
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def load(pool, url: str, path: str, headers: dict, *, connections: int, processes: int, seconds: float,
         warm: float = 1.0, servers: list | None = None) -> dict:
    """Requests/s and latency of GETs on `connections` keep-alive connections from `processes` client processes,
    and the CPU time the server processes spent per request."""
    host, port = url.removeprefix("http://").split(":")
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start = time.time() + 0.5
    cpu_before = _cpu(servers)
    results = pool.starmap(_load_process, [(host, int(port), path, headers, n, start, warm, seconds) for n in shares])
    cpu_after = _cpu(servers)
    latencies = [x for r in results for x in r["latencies"]]
    statuses: dict = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    errors = [e for r in results for e in r["errors"]]
    done = len(latencies)
    return {
        "requests_per_s": done / seconds, "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99), "requests": done, "statuses": statuses,
        "errors": len(errors), "error_sample": errors[:3],
        "server_cpu_ms_per_request": 1000 * (cpu_after - cpu_before) / done if servers and done else None,
        "client_cpu_share": sum(r["cpu_s"] for r in results) / (warm + seconds),
        "connections": connections, "client_processes": processes,
    }


def _cpu(pids) -> float:
    import psutil

    total = 0.0
    for pid in pids or ():
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


# ------------------------------------------------------------------------------------------ chat completions --
async def chat_stream(url: str, key: str, model: str, max_tokens: int, on_token=None) -> dict:
    """One streamed chat completion through /v1 with a raw connection: status, time to first token, the content
    chunks' times, the usage, and whether it ended with [DONE] (or how it failed)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}).encode()
    out = {"status": None, "stamps": [], "usage": None, "done": False, "error": None}
    buffer = bytearray()

    def on_chunk(data: bytes):
        buffer.extend(data)
        while b"\n\n" in buffer:
            event, _, rest = bytes(buffer).partition(b"\n\n")
            buffer[:] = rest
            if not event.startswith(b"data: "):
                continue
            payload = event[6:]
            if payload == b"[DONE]":
                out["done"] = True
                continue
            item = json.loads(payload)
            if "error" in item:
                out["error"] = item["error"]
            elif item.get("usage"):
                out["usage"] = item["usage"]
            if item.get("choices") and item["choices"][0].get("delta", {}).get("content"):
                out["stamps"].append(time.perf_counter())
                if on_token:
                    on_token()

    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(_request("POST", host, int(port), "/v1/chat/completions", {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Connection": "close"}, body))
        status, headers, rest = await _response(reader, on_chunk)
        writer.close()
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        out["error"] = repr(exc)
        return out
    out["status"] = status
    if status != 200:
        out["error"] = rest[:300].decode(errors="replace")
        out["retry_after"] = headers.get("retry-after")
    out["ttft_s"] = out["stamps"][0] - started if out["stamps"] else None
    return out


def decode_rate(stamps: list[float], tokens: int) -> float:
    return (tokens - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else float("nan")


class BackgroundStreams:
    """`count` chat completions streaming through /v1 without a pause (each starts again when it ends)."""

    def __init__(self, url, key, model, count, max_tokens=256):
        self.args, self.count, self.stop, self.tokens, self.failures = (url, key, model, max_tokens), count, False, 0, []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _one(self):
        while not self.stop:
            result = await chat_stream(*self.args, on_token=self._token)
            if result["status"] != 200 or result["error"]:
                self.failures.append(result["error"] or result["status"])

    def _token(self):
        self.tokens += 1

    async def _run(self):
        await asyncio.gather(*(self._one() for _ in range(self.count)))

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 120
        while self.tokens < 4 * self.count and time.time() < deadline:  # every stream past its first tokens
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=120)


# ------------------------------------------------------------------------------------------------ processes --
def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def listening_pids(port: int) -> list[int]:
    """The processes that accept on `port` (every web copy shares the supervisor's socket)."""
    import psutil

    pids = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                pids.add(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            pass
    return sorted(pids)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def has_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def web_line() -> str:
    """The Procfile's `web:` command, as the supervisor runs it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.partition(":")[2].strip()
    raise SystemExit("the Procfile has no web: line")


# ---------------------------------------------------------------------------------------------------- setup --
def store_prepare(apps: int) -> tuple[str, str]:
    """What `make run` does before it starts (migrate, the base model, the seed), then a bench user, an API key,
    and enough public apps for a page of 10 (some reviewed, so the ratings are real aggregates)."""
    from django.core.management import call_command

    from apps.accounts.models import User
    from apps.accounts.services import api_key_create
    from apps.catalog import services as catalog
    from apps.catalog.selectors import app_catalog

    call_command("migrate", verbosity=0)
    call_command("import_base_model")
    call_command("seed_store")

    def user(name):
        return User.objects.filter(username=name).first() or User.objects.create_user(name, f"{name}@example.com", None)

    creator, readers = user("bench"), [user(f"bench-reader-{i}") for i in range(3)]
    for i in range(app_catalog().count(), apps):
        app = catalog.app_create(user=creator, data={
            "name": f"Bench app {i}", "short_description": "An app the serving benchmark lists.",
            "description": "What the app does, in a few sentences. " * 4, "kind": "chatbot",
            "instructions": "Answer briefly.", "conversation_starters": ["Hello?"]})
        catalog.app_publish(app=app, user=creator, visibility="public")
        for reader in readers:
            catalog.review_save(app=app, user=reader, rating=3 + i % 3, text="Useful.")
    return api_key_create(user=user("bench-caller"), name="bench")[1], creator.username


def bare_start(data_dir: Path, processes: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, BARE_DATA_DIR=str(data_dir / "bare"), DJANGO_SETTINGS_MODULE="bench.bare.settings")
    subprocess.run([sys.executable, "-m", "bench.bare.seed"], cwd=ROOT, env=env, check=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "bench.bare.wsgi", "-w", str(processes), "-b", f"127.0.0.1:{port}",
         "--access-logfile", "/dev/null", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + BARE_PATH), 60, "the bare list")
    return proc, url


def store_start(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = env["WEB_PORT"]
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "store.supervisor", "Procfile"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: proc.poll() is None and answers(url + "/healthz"), 120, f"the store (log: {log})")
    return proc, url


# ----------------------------------------------------------------------------------------------------- main --
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench", help="the bench store's STORE_DATA_DIR")
    parser.add_argument("--seconds", type=float, default=10.0, help="each read measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--streams", type=int, default=4, help="chat completions streaming during the read test")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation in the streaming comparison")
    parser.add_argument("--repeats", type=int, default=9, help="streamed completions per path (medians)")
    parser.add_argument("--concurrent", type=int, default=64, help="streams at once through one web process")
    parser.add_argument("--concurrent-tokens", type=int, default=32)
    parser.add_argument("--parts", default="reads,streaming,concurrent",
                        help="which measurements to run (comma-separated; the README's figures come from all three)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    data = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    web_processes = int(os.environ.get("WEB_PROCESSES") or 2)
    os.environ.update(STORE_DATA_DIR=str(data), MODELS_REGISTRY_ROOT=str(data / "registry"),
                      DJANGO_SETTINGS_MODULE="store.settings")
    store_env = dict(os.environ, **RAISED_CAPS, WEB_PROCESSES=str(web_processes), WEB_PORT=str(free_port()),
                     INFERENCE_PORT=str(free_port()), INFERENCE_BACKEND="remote",
                     VENV_BIN=str(Path(sys.executable).parent))
    # This process runs the engine in process for the streaming comparison, as the model server runs it.
    os.environ.update(INFERENCE_BACKEND="local", TORCH_NUM_THREADS=THREADS, OMP_NUM_THREADS=THREADS)

    import multiprocessing

    import django

    django.setup()
    from django.conf import settings

    say(f"preparing the bench store in {data} (migrate, base model, seed) ...")
    key, _ = store_prepare(apps=12)
    model = settings.BASE_MODEL_ID
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    result: dict = {"web_processes": web_processes, "connections": args.connections, "seconds": args.seconds,
                    "raised_caps": RAISED_CAPS, "machine": {"cpus": os.cpu_count()}}
    started: list[subprocess.Popen] = []
    pool = multiprocessing.get_context("spawn").Pool(2)
    try:
        say(f"starting the bare list (gunicorn, {web_processes} sync workers) and the store (supervisor, Procfile) ...")
        bare, bare_url = bare_start(data, web_processes)
        started.append(bare)
        store, url = store_start(store_env, logs / "store.log")
        started.append(store)
        web_pids = [pid for pid in listening_pids(int(store_env["WEB_PORT"])) if pid != store.pid]  # not the supervisor
        bare_pids = sorted({bare.pid, *listening_pids(int(bare_url.rsplit(":", 1)[1]))})
        say(f"web processes {web_pids}; warming the model server (loads the base model) ...")
        wait_until(lambda: answers(f"http://127.0.0.1:{store_env['INFERENCE_PORT']}/health"), 120, "the model server")
        deadline = time.time() + 180
        while (warm := asyncio.run(chat_stream(url, key, model, 8)))["status"] == 503 and time.time() < deadline:
            time.sleep(1)  # the model server is up, still loading the model
        if warm["status"] != 200 or warm["error"]:
            raise SystemExit(f"a chat completion through the store failed: {warm}")
        auth = {"Authorization": f"Bearer {key}"}
        reads = {}

        def measure(name, target, path, headers, pids, processes=1):
            say(f"reads: {name} ({args.seconds:.0f} s, {args.connections} connections, {processes} client process(es)) ...")
            r = load(pool, target, path, headers, connections=args.connections, processes=processes,
                     seconds=args.seconds, servers=pids)
            if set(r["statuses"]) != {200} or r["errors"]:
                say(f"  not all 200: {r['statuses']} errors {r['errors']} {r['error_sample']}")
            say(f"  {r['requests_per_s']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"server CPU {r['server_cpu_ms_per_request'] or 0:.2f} ms/request, client CPU {r['client_cpu_share']:.0%}")
            reads[name] = r
            return r

        if "reads" in parts:
            # 1. The client: the same bare list with 1 and 2 client processes must give the same figure.
            # The bare list is measured before and after the store; the reference is the better of the two runs (a
            # connection per request now and then waits out a 1 s SYN retransmit here, which would flatter the store).
            measure("bare, 2 client processes", bare_url, BARE_PATH, {}, bare_pids, processes=2)
            first = measure("bare, before", bare_url, BARE_PATH, {}, bare_pids)
            measure("store", url, LIST_PATH, auth, web_pids)
            second = measure("bare, after", bare_url, BARE_PATH, {}, bare_pids)
            reads["bare"] = max(first, second, key=lambda r: r["requests_per_s"])
            with BackgroundStreams(url, key, model, args.streams) as streams:
                for name, target, path, headers, pids in [("store, streaming", url, LIST_PATH, auth, web_pids),
                                                          ("bare, streaming", bare_url, BARE_PATH, {}, bare_pids)]:
                    t0, n0 = time.perf_counter(), streams.tokens
                    r = measure(name, target, path, headers, pids)  # (not on one line: Python would count first)
                    r["stream_tokens_per_s"] = (streams.tokens - n0) / (time.perf_counter() - t0)
            reads["streaming"] = {"streams": args.streams, "failures": streams.failures[:5]}
            result["reads"] = reads

        # 2. Streaming through web + model server against the engine in this process, interleaved.
        if "streaming" in parts:
            server_url = f"http://127.0.0.1:{store_env['INFERENCE_PORT']}"
            result["streaming"] = streaming_compare(url, key, model, args.tokens, args.repeats, server_url)

        # 3. 64 concurrent streams through one web process.
        if "concurrent" in parts:
            result["concurrent"] = concurrent_streams(store_env, logs, url, key, model, args.concurrent,
                                                      args.concurrent_tokens, started)

        # 4. Web RSS and no torch.
        result["web"] = {"rss_mb": {pid: rss_mb(pid) for pid in web_pids},
                         "torch_mapped": any(has_torch(pid) for pid in web_pids)}
    finally:
        pool.terminate()
        for proc in reversed(started):
            stop(proc)

    out = ROOT / "bench" / "results" / "serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(summary(result))
    print(f"\nJSON: {out.relative_to(ROOT)}")


def streaming_compare(url, key, model, tokens, repeats, server_url) -> dict:
    """The engine in this process, /v1 through web and the model server, and the model server called directly
    (what web adds is the difference of the last two), interleaved."""
    from django.conf import settings

    from apps.inference.services import engine_get, generation_request_build
    from apps.inference.types import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    request = generation_request_build(user=None, reference=model, messages=PROMPT, params=params)
    engine = engine_get()
    engine.generate(request)  # loads the model in this process

    def in_process():
        started, stamps, completion = time.perf_counter(), [], None
        for event in engine.stream(request):
            if event.delta:
                stamps.append(time.perf_counter())
            if event.result:
                completion = event.result.completion_tokens
        return stamps[0] - started, decode_rate(stamps, completion)

    def streamed(target, token, name):
        r = asyncio.run(chat_stream(target, token, name, tokens))
        if r["status"] != 200 or r["error"] or not r["done"]:
            raise SystemExit(f"a streamed completion failed: {r}")
        return r["ttft_s"], decode_rate(r["stamps"], r["usage"]["completion_tokens"])

    paths = {"in_process": in_process, "served": lambda: streamed(url, key, model),
             "model_server": lambda: streamed(server_url, settings.INFERENCE_REMOTE_API_KEY, request.model.key)}
    runs = {name: [] for name in paths}
    for i in range(repeats):
        say(f"streaming {i + 1}/{repeats}: engine in process, through web + model server, model server directly ...")
        for name, measure in paths.items():
            time.sleep(QUIET_S)  # each path starts on a quiet machine, not on the heels of the one before
            runs[name].append(measure())
    out = {name: {"ttft_s": statistics.median(x[0] for x in r), "decode_tps": statistics.median(x[1] for x in r),
                  "ttft_all_s": [x[0] for x in r]} for name, r in runs.items()}
    d, s, m = out["in_process"], out["served"], out["model_server"]
    say(f"  in process: TTFT {d['ttft_s'] * 1000:.0f} ms, {d['decode_tps']:.1f} tok/s; served: TTFT "
        f"{s['ttft_s'] * 1000:.0f} ms, {s['decode_tps']:.1f} tok/s; model server directly: TTFT "
        f"{m['ttft_s'] * 1000:.0f} ms, {m['decode_tps']:.1f} tok/s")
    return {"tokens": tokens, "repeats": repeats, **out,
            "ttft_ratio": s["ttft_s"] / d["ttft_s"], "decode_ratio": s["decode_tps"] / d["decode_tps"],
            "model_server_ttft_ratio": m["ttft_s"] / d["ttft_s"], "web_ttft_ms": 1000 * (s["ttft_s"] - m["ttft_s"])}


def concurrent_streams(store_env, logs, store_url, key, model, count, tokens, started) -> dict:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    env = dict(store_env, WEB_FD=str(sock.fileno()), SUPERVISOR_PROCESS="web.bench")
    with open(logs / "web-single.log", "wb") as out:
        proc = subprocess.Popen(["sh", "-c", f"exec {web_line()}"], cwd=ROOT, env=env, pass_fds=(sock.fileno(),),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    sock.close()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/healthz"), 60, "the single web process")
    asyncio.run(chat_stream(url, key, model, 4))  # warm: first imports and connections
    rss = {"idle": rss_mb(proc.pid)}
    outcomes: list[dict] = []

    async def one():
        result = await chat_stream(url, key, model, tokens)
        outcomes.append(result)
        if len(outcomes) == 10:
            rss["after_10th"] = rss_mb(proc.pid)

    async def run():
        peak = 0.0

        async def watch():
            nonlocal peak
            while len(outcomes) < count:
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0.2)

        await asyncio.gather(watch(), *(one() for _ in range(count)))
        return peak

    say(f"{count} concurrent streams ({tokens} tokens each) through one web process ...")
    t0 = time.perf_counter()
    rss["peak"] = asyncio.run(run())
    wall = time.perf_counter() - t0
    time.sleep(1)
    rss["after_64th"] = rss_mb(proc.pid)

    def kind(r):
        if r["status"] == 200 and r["done"] and not r["error"] and r["usage"]:
            return "completed"
        if r["status"] in (429, 503):
            return f"refused {r['status']}"
        return "error"

    kinds: dict = {}
    for r in outcomes:
        kinds[kind(r)] = kinds.get(kind(r), 0) + 1
    errors = [r for r in outcomes if kind(r) == "error"][:3]
    torch_mapped = has_torch(proc.pid)
    say(f"  {kinds} in {wall:.1f} s; RSS after the 10th {rss['after_10th']:.0f} MB, after the 64th "
        f"{rss['after_64th']:.0f} MB (peak {rss['peak']:.0f} MB)")
    stop(proc)
    return {"streams": count, "tokens": tokens, "outcomes": kinds, "error_sample": errors, "wall_s": wall,
            "rss_mb": rss, "rss_growth": rss["after_64th"] / rss["after_10th"] - 1,
            "torch_mapped": torch_mapped}


def summary(r: dict) -> str:
    def row(name, x, ref=None):
        ratio = f" ({x['requests_per_s'] / ref['requests_per_s']:.2f}x)" if ref else ""
        return (f"| {name} | {x['requests_per_s']:.0f}{ratio} | {x['p50_ms']:.1f} ms | {x['p99_ms']:.1f} ms | "
                f"{x['server_cpu_ms_per_request']:.2f} ms |")

    lines = []
    if "reads" in r:
        reads = r["reads"]
        bare, store = reads["bare"], reads["store"]
        bare_s, store_s = reads["bare, streaming"], reads["store, streaming"]
        lines += [
            (f"Catalog reads, `GET {LIST_PATH}`, {r['connections']} keep-alive connections, {r['web_processes']} web "
            f"processes, {r['seconds']:.0f} s each:"), "",
            "| server | requests/s | p50 | p99 | server CPU per request |", "| --- | --- | --- | --- | --- |",
            row("bare DRF list, gunicorn sync workers", bare),
            row("bare DRF list, 2 client processes (client check)", reads["bare, 2 client processes"]),
            row("store, idle", store, bare),
            row(f"store, {reads['streaming']['streams']} chat completions streaming", store_s, bare),
            row(f"bare DRF list, {reads['streaming']['streams']} chat completions streaming", bare_s),
            "",
            (f"p99 while streaming: {store_s['p99_ms']:.1f} ms = {store_s['p99_ms'] / bare['p99_ms']:.2f}x the idle "
            f"bare list's p99 ({store_s['p99_ms'] / bare_s['p99_ms']:.2f}x the bare list's under the same streams); "
            f"requests/s while streaming {store_s['requests_per_s'] / bare_s['requests_per_s']:.2f}x the bare list's "
            f"under the same streams. The {reads['streaming']['streams']} streams decoded "
            f"{store_s['stream_tokens_per_s']:.1f} tokens/s in all during the store's reads, "
            f"{bare_s['stream_tokens_per_s']:.1f} during the bare list's."),
            "",
        ]
    if "streaming" in r:
        s = r["streaming"]
        lines += [
            (f"| one greedy chat completion, {s['tokens']} tokens, median of {s['repeats']} | time to first token | "
            "decode tokens/s |"), "| --- | --- | --- |",
            f"| engine in process | {s['in_process']['ttft_s'] * 1000:.0f} ms | {s['in_process']['decode_tps']:.1f} |",
            (f"| /v1 streamed through web + model server | {s['served']['ttft_s'] * 1000:.0f} ms "
            f"({s['ttft_ratio']:.2f}x) | {s['served']['decode_tps']:.1f} ({s['decode_ratio']:.2f}x) |"),
            (f"| the model server called directly | {s['model_server']['ttft_s'] * 1000:.0f} ms "
            f"({s['model_server_ttft_ratio']:.2f}x) | {s['model_server']['decode_tps']:.1f} |"),
            "",
            f"Web adds {s['web_ttft_ms']:.0f} ms to the time to first token (served minus the model server directly).",
            "",
        ]
    if "concurrent" in r:
        c = r["concurrent"]
        lines += [
            f"{c['streams']} concurrent streamed chat completions ({c['tokens']} tokens) through one web process: "
            + ", ".join(f"{v} {k}" for k, v in sorted(c["outcomes"].items()))
            + f" in {c['wall_s']:.0f} s; web RSS {c['rss_mb']['after_10th']:.0f} MB after the 10th, "
            f"{c['rss_mb']['after_64th']:.0f} MB after the 64th ({c['rss_growth']:+.1%}), peak "
            f"{c['rss_mb']['peak']:.0f} MB.",
            "",
        ]
    w = r["web"]
    lines.append("Web process RSS: " + ", ".join(f"{v:.0f} MB" for v in w["rss_mb"].values())
                 + f" (torch mapped: {'yes' if w['torch_mapped'] else 'no'}).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
