"""The remote engine against vLLM (`INFERENCE_REMOTE_KIND=vllm`): full models by the folder vLLM was started with,
LoRA fine-tunes loaded at runtime with `POST /v1/load_lora_adapter` the first time a request names them.

vLLM cannot be installed here (no GPU; its wheels bring their own torch), so `FakeVllm` stands in for its OpenAI
server: the endpoints the store uses, with vLLM's request checks and answers as its source has them (vllm
`entrypoints/openai` and `entrypoints/serve/lora`): the error body `{"error": {"message", "type", "param",
"code": <HTTP status>}}`; 404 "The model `x` does not exist." for a name it does not serve; the adapter endpoints
only with VLLM_ALLOW_RUNTIME_LORA_UPDATING (FastAPI's `{"detail": "Not Found"}` otherwise); 400 for an adapter name
already loaded; 404 "Loading lora x failed: No adapter found for <path>"; a plain-text 200 on success; `/tokenize`
outside /v1 (no key), its defaults those of generation (a completion's BOS token, none on top of a chat template);
fields it does not know are ignored (the fake records them: the store must never send one). The registry is mounted
in the fake's "container" at another path than the store's, as compose may do.
"""

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest
import uvicorn
from django.conf import settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from apps.accounts.services import api_key_create
from apps.inference import services
from apps.inference.remote import ModelNotServable
from apps.inference.types import (
    ContextLengthExceeded,
    InvalidSampling,
    ModelUnavailable,
    SamplingParams,
)
from apps.registry.services import model_version_register
from tests.live import free_port, wait_for

pytestmark = pytest.mark.django_db

VLLM_REGISTRY = "/vllm/registry"  # the registry volume inside the fake vLLM's "container"
API_KEY = "vllm-test-key"
ROLES = {"system", "user", "assistant", "developer", "tool"}
# The request fields vLLM's chat and completion requests have, among those the store could send; vLLM logs and
# drops any other ("The following fields were present in the request but ignored").
CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop",
               "seed", "stream", "stream_options", "repetition_penalty", "ignore_eos", "n", "use_beam_search"}
COMPLETION_FIELDS = (CHAT_FIELDS - {"messages", "max_completion_tokens"}) | {"prompt"}


def vllm_error(message: str, status: int, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


def tokens(text: str) -> list[str]:
    return re.findall(r"<\|[a-z_]+\|>|\w+|[^\w\s]", text)


class FakeVllm:
    """vLLM's OpenAI server started as `vllm serve <model_path> [--served-model-name NAME] --enable-lora
    --max-lora-rank N`, with VLLM_API_KEY, over a registry that it sees at VLLM_REGISTRY."""

    def __init__(self, *, host_registry: Path, model_path: str, served_name: str | None = None,
                 runtime_lora: bool = True, max_lora_rank: int = 16, max_model_len: int = 512):
        self.host_registry, self.model_path = host_registry, model_path
        self.served_name = served_name or model_path  # vLLM's default name: the --model argument as given
        self.runtime_lora, self.max_lora_rank, self.max_model_len = runtime_lora, max_lora_rank, max_model_len
        self.adapters: dict[str, str] = {}  # name -> path, as vLLM's lora_requests
        self.load_calls: list[str] = []  # every POST /v1/load_lora_adapter, by lora_name
        self.generations: list[str] = []  # the model named by each generation it ran
        self.ignored: list[str] = []  # fields vLLM would have dropped
        self._locks: dict[str, asyncio.Lock] = {}
        routes = [Route("/v1/models", self.models, methods=["GET"]),
                  Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/tokenize", self.tokenize, methods=["POST"]),
                  Route("/health", self.health, methods=["GET"])]
        if runtime_lora:  # vLLM attaches these routes only with VLLM_ALLOW_RUNTIME_LORA_UPDATING
            routes.append(Route("/v1/load_lora_adapter", self.load_lora_adapter, methods=["POST"]))
        self.app = Starlette(routes=routes)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))

    # -- the process ---------------------------------------------------------------------------------------------
    def __enter__(self):
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, timeout=10, what="the fake vLLM server")
        return self

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def restart(self) -> None:
        """vLLM restarted: the same model, no adapter loaded any more."""
        self.adapters.clear()

    # -- vLLM's checks -------------------------------------------------------------------------------------------
    def _refused(self, request: Request) -> Response | None:
        """The API key on /v1 (vLLM's middleware), and a JSON body (`validate_json_request`)."""
        if request.url.path.startswith("/v1") and request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if request.method == "POST" and request.headers.get("content-type", "").split(";")[0] != "application/json":
            return vllm_error("Unsupported Media Type: Only 'application/json' is allowed", 400, "BadRequestError")
        return None

    async def _body(self, request: Request) -> dict | Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return vllm_error("JSON decode error", 400, "BadRequestError")
        return body if isinstance(body, dict) else vllm_error("Input should be an object", 400, "BadRequestError")

    def _unknown(self, model: str | None) -> Response | None:
        if model is None or model == self.served_name or model in self.adapters:
            return None
        return vllm_error(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")

    def _host(self, path: str) -> Path | None:
        try:
            return self.host_registry / PurePosixPath(path).relative_to(VLLM_REGISTRY)
        except ValueError:
            return None

    # -- endpoints -----------------------------------------------------------------------------------------------
    async def health(self, request: Request):
        return Response(status_code=200)

    async def models(self, request: Request):
        if (refused := self._refused(request)) is not None:
            return refused
        card = {"object": "model", "created": 0, "owned_by": "vllm", "max_model_len": self.max_model_len, "permission": []}
        data = [{**card, "id": self.served_name, "root": self.model_path, "parent": None}]
        data += [{**card, "id": name, "root": path, "parent": self.served_name, "max_model_len": None}
                 for name, path in self.adapters.items()]
        return JSONResponse({"object": "list", "data": data})

    async def load_lora_adapter(self, request: Request):
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not isinstance(path, str):
            return vllm_error("lora_name and lora_path: Field required (a string)", 400, "BadRequestError")
        self.load_calls.append(name)
        async with self._locks.setdefault(name, asyncio.Lock()):  # vLLM's lock per adapter name
            if not name or not path:
                return vllm_error("Both 'lora_name' and 'lora_path' must be provided.", 400, "InvalidUserInput")
            if name in self.adapters:
                return vllm_error(f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                                  "in place, set 'load_inplace' to True.", 400, "InvalidUserInput")
            await asyncio.sleep(0.3)  # loading takes a while: long enough for concurrent first requests to meet
            folder = self._host(path)
            if folder is None or not (folder / "adapter_config.json").is_file() or not (
                    folder / "adapter_model.safetensors").is_file():
                return vllm_error(f"Loading lora {name} failed: No adapter found for {path}", 404, "NotFoundError")
            rank = json.loads((folder / "adapter_config.json").read_text())["r"]
            if rank > self.max_lora_rank:
                return vllm_error(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.", 500,
                                  "InternalServerError")
            self.adapters[name] = path
        return Response(f"Success: LoRA adapter '{name}' added successfully.", status_code=200)

    async def tokenize(self, request: Request):
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if (unknown := self._unknown(body.get("model"))) is not None:
            return unknown
        if "messages" in body:
            ids = self._chat_tokens(body["messages"], body.get("add_generation_prompt", True),
                                    body.get("add_special_tokens", False))
        elif isinstance(body.get("prompt"), str):
            ids = self._prompt_tokens(body["prompt"], body.get("add_special_tokens", True))
        else:
            return vllm_error("prompt or messages: Field required", 400, "BadRequestError")
        if isinstance(ids, Response):
            return ids
        return JSONResponse({"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids, "token_strs": None})

    async def chat(self, request: Request):
        return await self._generate(request, chat=True)

    async def completions(self, request: Request):
        return await self._generate(request, chat=False)

    def _chat_tokens(self, messages, add_generation_prompt=True, add_special_tokens=False) -> list[int] | Response:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages):
            return vllm_error("messages: a list of {role, content}", 400, "BadRequestError")
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return [hash(t) % 49152 for t in (["<|bos|>"] if add_special_tokens else []) + tokens(text)]

    def _prompt_tokens(self, prompt: str, add_special_tokens=True) -> list[int]:
        return [hash(t) % 49152 for t in (["<|bos|>"] if add_special_tokens else []) + tokens(prompt)]

    async def _generate(self, request: Request, *, chat: bool):
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        self.ignored += sorted(set(body) - (CHAT_FIELDS if chat else COMPLETION_FIELDS))
        model = body.get("model")
        if (unknown := self._unknown(model)) is not None:
            return unknown
        if chat:
            prompt = self._chat_tokens(body.get("messages"))
        elif isinstance(body.get("prompt"), str):
            prompt = self._prompt_tokens(body["prompt"])
        else:
            return vllm_error("prompt: Field required", 400, "BadRequestError")
        if isinstance(prompt, Response):
            return prompt
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return vllm_error("max_tokens must be at least 1", 400, "BadRequestError", "max_tokens")
        if len(prompt) + (max_tokens or 1) > self.max_model_len:
            return vllm_error(f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                              f"requested {len(prompt) + (max_tokens or 1)} tokens.", 400, "BadRequestError")
        stream = body.get("stream", False)
        if body.get("stream_options") is not None and not stream:
            return vllm_error("Stream options can only be defined when `stream=True`.", 400, "BadRequestError")
        self.generations.append(model)
        answer = [model if model in self.adapters else "base", "says", "hello", "to", "you", "."]
        pieces = [f" {w}" if i else w for i, w in enumerate(answer[:max_tokens or len(answer)])]
        finish = "length" if len(pieces) < len(answer) else "stop"
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(pieces),
                 "total_tokens": len(prompt) + len(pieces)}
        meta = {"id": "chatcmpl-1" if chat else "cmpl-1", "created": int(time.time()), "model": model}
        if not stream:
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}} if chat
                      else {"index": 0, "text": "".join(pieces)})
            return JSONResponse({**meta, "object": "chat.completion" if chat else "text_completion",
                                 "choices": [{**choice, "logprobs": None, "finish_reason": finish}], "usage": usage})
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece, reason=None, role=False):
            if chat:
                delta = {"role": "assistant", "content": piece} if role else {"content": piece}
                return {**meta, "object": kind, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                             "finish_reason": reason}]}
            return {**meta, "object": kind, "choices": [{"index": 0, "text": piece, "logprobs": None,
                                                         "finish_reason": reason}]}

        async def events():
            if chat:
                yield f"data: {json.dumps(chunk('', role=True))}\n\n"
            for piece in pieces:
                yield f"data: {json.dumps(chunk(piece))}\n\n"
            yield f"data: {json.dumps(chunk('', finish))}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**meta, 'object': kind, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


# --- the store's side -------------------------------------------------------------------------------------------
BASE_FOLDER = f"{VLLM_REGISTRY}/smollm2-135m-instruct/1"  # `vllm serve` on the base model's version folder


def adapter(name: str, base, owner, tmp_path: Path, *, rank: int = 8):
    """A LoRA version on `base` in the registry (the fake reads only its config; vLLM checks the files are there)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / f"adapter-{rank}-{name.replace(':', '_')}"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": base.reference}))
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((rank, 64), dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))
    return model_version_register(name=name, source_dir=folder, kind="lora", owner=owner, base_version=base)


@pytest.fixture
def vllm(settings, tiny_version):
    """A fake vLLM on the base model's folder, and the store's engine pointed at it as compose's `gpu` profile does."""
    with FakeVllm(host_registry=Path(settings.MODELS_REGISTRY_ROOT), model_path=BASE_FOLDER) as fake:
        use(settings, fake)
        yield fake
    services.engine_reset()


def use(settings, fake: FakeVllm) -> None:
    settings.INFERENCE_BACKEND = "remote"
    settings.INFERENCE_REMOTE_KIND = "vllm"
    settings.INFERENCE_REMOTE_BASE_URL = fake.url
    settings.INFERENCE_REMOTE_API_KEY = API_KEY
    settings.INFERENCE_REMOTE_REGISTRY_ROOT = VLLM_REGISTRY
    services.engine_reset()


def hello(reference: str, user, **params) -> dict:
    return {"user": user, "reference": reference, "messages": [{"role": "user", "content": "Hi there"}],
            "params": SamplingParams(**{"max_tokens": 16, "temperature": 0, **params})}


def astream_text(reference: str, user, copies: int = 1) -> list[str]:
    """`copies` streams of the same request at once on one event loop, as the web tier runs them."""
    request = services.generation_request_build(**hello(reference, user))  # the database, outside the loop

    async def one() -> str:
        events = [event async for event in await services.engine_get().astream(request)]
        return events[-1].result.text

    async def together() -> list[str]:
        return list(await asyncio.gather(*(one() for _ in range(copies))))

    return asyncio.run(together())


def test_a_lora_fine_tune_is_loaded_once_then_served_and_again_after_a_vllm_restart(vllm, tiny_version, user, tmp_path):
    version = adapter("ft:smollm2-135m-instruct:u::ftjob-1", tiny_version, user, tmp_path)
    ref = version.reference
    first = services.generation_run(**hello(ref, user))
    # Loaded under its reference from its folder as vLLM sees the registry.
    where = version.path.relative_to(settings.MODELS_REGISTRY_ROOT).as_posix()
    assert vllm.load_calls == [ref] and vllm.adapters == {ref: f"{VLLM_REGISTRY}/{where}"}
    assert (first.text, first.finish_reason, first.completion_tokens) == (f"{ref} says hello to you .", "stop", 6)
    assert vllm.generations == [ref]
    # Served from now on without loading again: sync, streamed, async, counted.
    events = list(services.generation_stream(**hello(ref, user, max_tokens=3)))
    assert "".join(e.delta for e in events) == events[-1].result.text == f"{ref} says hello"
    assert events[-1].result.finish_reason == "length"
    assert astream_text(ref, user) == [first.text]
    measure = services.prompt_measure(services.model_spec_resolve(user=user, reference=ref))
    assert measure.count([{"role": "user", "content": "Hi there"}]) == first.prompt_tokens  # as vLLM counts them
    assert measure.context == vllm.max_model_len
    assert vllm.load_calls == [ref]
    # vLLM restarts and forgets its adapters: the next request meets its 404, loads the adapter once, and is served.
    vllm.restart()
    assert services.generation_run(**hello(ref, user)).text == first.text
    assert vllm.load_calls == [ref, ref] and list(vllm.adapters) == [ref]
    assert services.generation_run(**hello(ref, user)).text == first.text
    assert vllm.load_calls == [ref, ref]
    # A store process that starts after another loaded it finds it in vLLM's model list: no load.
    services.engine_reset()
    assert astream_text(ref, user) == [first.text]
    assert vllm.load_calls == [ref, ref] and vllm.ignored == []


def test_the_base_model_is_served_by_the_folder_vllm_was_started_with(settings, tiny_version, user):
    for served_name in [None, "smollm2"]:  # vLLM's default name (the path), or --served-model-name
        with FakeVllm(host_registry=Path(settings.MODELS_REGISTRY_ROOT), model_path=BASE_FOLDER,
                      served_name=served_name) as fake:
            use(settings, fake)
            chat = services.generation_run(**hello("smollm2-135m-instruct", user, max_tokens=2))
            assert (chat.text, chat.finish_reason, chat.model) == ("base says", "length", tiny_version.reference)
            # penalize_prompt=False is not sent: vLLM has no such switch (it would log and drop it: fake.ignored).
            completion = services.generation_run(user=user, reference="smollm2-135m-instruct", prompt="Once upon a time",
                                                 params=SamplingParams(max_tokens=4, temperature=0.7, top_k=5, seed=3,
                                                                       stop=("!",), repetition_penalty=1.1,
                                                                       penalize_prompt=False))
            assert completion.text == "base says hello to"
            spec = services.model_spec_resolve(user=user, reference="smollm2-135m-instruct")
            # Counted as vLLM encodes a completion (its BOS token included) and a chat (the template's own tokens).
            assert services.prompt_measure(spec).count_text("Once upon a time") == completion.prompt_tokens == 5
            assert services.prompt_measure(spec).count([{"role": "user", "content": "Hi there"}]) == chat.prompt_tokens
            assert fake.generations == [served_name or BASE_FOLDER] * 2 and fake.load_calls == [] and fake.ignored == []
            # /healthz's probe: vLLM answers and serves the base model.
            assert services.check_inference().ok
    services.engine_reset()


def test_concurrent_first_requests_load_an_adapter_once(vllm, tiny_version, user, tmp_path):
    threaded = adapter("ft:smollm2-135m-instruct:u:a:ftjob-2", tiny_version, user, tmp_path).reference
    request = services.generation_request_build(**hello(threaded, user))  # the database here: threads see no test data
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: services.engine_get().generate(request).text, range(8)))
    assert texts == [f"{threaded} says hello to you ."] * 8 and vllm.load_calls == [threaded]

    streamed = adapter("ft:smollm2-135m-instruct:u:b:ftjob-3", tiny_version, user, tmp_path).reference
    assert astream_text(streamed, user, copies=8) == [f"{streamed} says hello to you ."] * 8
    assert vllm.load_calls == [threaded, streamed] and len(vllm.generations) == 16


def test_a_full_fine_tune_or_an_adapter_on_another_base_gets_a_clear_error(vllm, tiny_version, tiny_hf_dir, user, client,
                                                                         tmp_path):
    full_version = model_version_register(name="ft:smollm2-135m-instruct:u:full:ftjob-4", source_dir=tiny_hf_dir,
                                          owner=user, base_version=tiny_version)
    full = full_version.reference
    with pytest.raises(ModelNotServable, match=re.escape(full) + ".*needs a vLLM server of its own"):
        services.generation_run(**hello(full, user))
    # The same on /v1, in OpenAI's shape: a 400 (a 503 would be retried by clients, for nothing).
    key = api_key_create(user=user, name="t")[1]
    answer = client.post("/v1/chat/completions", {"model": full, "messages": [{"role": "user", "content": "Hi"}]},
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_servable", "model")
    assert full in error["message"] and "server of its own" in error["message"]
    # An adapter trained on that full fine-tune: its base is not vLLM's model either. Nothing was loaded or run.
    other = adapter("ft:smollm2-135m-instruct:u:onfull:ftjob-5", full_version, user, tmp_path).reference
    with pytest.raises(ModelNotServable, match=re.escape(other) + " is a LoRA fine-tune of " + re.escape(full)):
        services.generation_run(**hello(other, user))
    # A fine-tune of a LoRA fine-tune: vLLM applies one adapter, not a chain.
    first = adapter("ft:smollm2-135m-instruct:u:one:ftjob-9", tiny_version, user, tmp_path)
    second = adapter("ft:smollm2-135m-instruct:u:two:ftjob-10", first, user, tmp_path).reference
    with pytest.raises(ModelNotServable, match=re.escape(second) + " is a LoRA fine-tune of another LoRA fine-tune"):
        services.generation_run(**hello(second, user))
    assert vllm.load_calls == [] and vllm.generations == []


def test_what_vllm_would_drop_or_refuse_is_a_clear_error(vllm, tiny_version, user, tmp_path):
    ref = adapter("ft:smollm2-135m-instruct:u:c:ftjob-6", tiny_version, user, tmp_path).reference
    # Decoding vLLM has no field for: refused here (vLLM would ignore the field and answer something else).
    for params, field in [({"num_beams": 3}, "num_beams"), ({"no_repeat_ngram_size": 2}, "no_repeat_ngram_size")]:
        with pytest.raises(InvalidSampling) as refused:
            services.generation_run(**hello("smollm2-135m-instruct", user, **params))
        assert refused.value.param == field and refused.value.status == 400
    # Too long a prompt: vLLM's 400 is the store's context_length_exceeded.
    with pytest.raises(ContextLengthExceeded):
        services.generation_run(**hello("smollm2-135m-instruct", user, max_tokens=600))
    # A rank above vLLM's --max-lora-rank: the operator's setting is named.
    big = adapter("ft:smollm2-135m-instruct:u:big:ftjob-7", tiny_version, user, tmp_path, rank=64).reference
    with pytest.raises(ModelNotServable, match="--max-lora-rank"):
        services.generation_run(**hello(big, user))
    # vLLM's registry volume is not the store's (it has the base model, not the new adapter): named.
    vllm.host_registry = tmp_path / "another-volume"
    with pytest.raises(ModelUnavailable, match="INFERENCE_REMOTE_REGISTRY_ROOT"):
        services.generation_run(**hello(ref, user))
    assert vllm.ignored == [] and vllm.generations == [] and ref not in vllm.adapters


def test_a_vllm_without_runtime_lora_loading_is_named(settings, tiny_version, user, tmp_path):
    ref = adapter("ft:smollm2-135m-instruct:u:d:ftjob-8", tiny_version, user, tmp_path).reference
    with FakeVllm(host_registry=Path(settings.MODELS_REGISTRY_ROOT), model_path=BASE_FOLDER, runtime_lora=False) as fake:
        use(settings, fake)
        with pytest.raises(ModelUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            services.generation_run(**hello(ref, user))
        # The base model is served all the same; a wrong key is named as the store's setting.
        assert services.generation_run(**hello("smollm2-135m-instruct", user)).text == "base says hello to you ."
        settings.INFERENCE_REMOTE_API_KEY = "wrong"
        services.engine_reset()
        with pytest.raises(ModelUnavailable, match="INFERENCE_REMOTE_API_KEY"):
            services.generation_run(**hello("smollm2-135m-instruct", user))
    services.engine_reset()


def test_the_fake_checks_requests_as_vllm_does(vllm):
    """The fake refuses what vLLM refuses, so the tests above prove the store sends vLLM's shapes."""
    import httpx2

    bearer = {"Authorization": f"Bearer {API_KEY}"}
    with httpx2.Client(base_url=vllm.url.removesuffix("/v1")) as http:
        assert http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/p"}).status_code == 401
        assert http.post("/v1/load_lora_adapter", content=b"{}", headers=bearer).status_code == 400  # not JSON typed
        missing = http.post("/v1/load_lora_adapter", json={"lora_name": "x"}, headers=bearer)
        assert missing.status_code == 400 and missing.json()["error"]["code"] == 400
        gone = http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": f"{VLLM_REGISTRY}/nope/1"},
                         headers=bearer)
        assert gone.status_code == 404 and "No adapter found" in gone.json()["error"]["message"]
        unknown = http.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "a"}]},
                            headers=bearer)
        assert unknown.status_code == 404 and unknown.json()["error"] == {
            "message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}
        options = http.post("/v1/completions", json={"model": BASE_FOLDER, "prompt": "a", "stream_options": {}},
                            headers=bearer)
        assert options.status_code == 400
        counted = http.post("/tokenize", json={"model": BASE_FOLDER, "prompt": "a b"}).json()  # no key outside /v1
        assert counted["count"] == 3 and counted["max_model_len"] == 512
