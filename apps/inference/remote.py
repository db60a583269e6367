"""The remote engine: any OpenAI-compatible server (vLLM, llama.cpp's server, another store) via `openai`."""

from __future__ import annotations

from collections.abc import Iterator

import openai

from apps.inference.types import (
    ContextLengthExceeded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    InvalidSampling,
    ModelUnavailable,
    StreamEvent,
)


class RemoteEngine:
    def __init__(self, *, base_url: str, api_key: str = "", timeout: float = 300.0, client=None):
        if client is None:
            # The server may want no key (llama.cpp, vLLM by default); the client insists on some string.
            client = openai.OpenAI(base_url=base_url, api_key=api_key or "no-key", timeout=timeout, max_retries=1)
        self.client = client

    def _arguments(self, request: GenerationRequest) -> dict:
        p = request.params.validate()
        args = {"model": request.model.key, "temperature": p.temperature, "top_p": p.top_p}
        if p.max_tokens is not None:
            args["max_tokens"] = p.max_tokens
        if p.stop:
            args["stop"] = list(p.stop)
        if p.seed is not None:
            args["seed"] = p.seed
        extra = {}  # understood by vLLM, llama.cpp's server and this store; ignored by servers that don't know them
        if p.top_k:
            extra["top_k"] = p.top_k
        if p.repetition_penalty != 1.0:
            extra["repetition_penalty"] = p.repetition_penalty
        if p.no_repeat_ngram_size:
            extra["no_repeat_ngram_size"] = p.no_repeat_ngram_size
        if p.num_beams > 1:
            extra["num_beams"] = p.num_beams
        if extra:
            args["extra_body"] = extra
        if request.messages is not None:
            args["messages"] = request.messages
        else:
            args["prompt"] = request.prompt or ""
        return args

    def _call(self, args: dict, **more):
        endpoint = self.client.chat.completions if "messages" in args else self.client.completions
        try:
            return endpoint.create(**args, **more)
        except openai.APIStatusError as exc:
            raise _translate(exc) from exc
        except openai.APIConnectionError as exc:
            raise ModelUnavailable(f"the inference server cannot be reached: {exc}") from exc

    def generate(self, request: GenerationRequest) -> GenerationResult:
        args = self._arguments(request)
        response = self._call(args)
        choice = response.choices[0]
        text = choice.message.content if "messages" in args else choice.text
        usage = response.usage
        return GenerationResult(
            text=text or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=request.model.key,
        )

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        args = self._arguments(request)
        response = self._call(args, stream=True, stream_options={"include_usage": True})
        return self._events(request, args, response)

    def _events(self, request, args, response) -> Iterator[StreamEvent]:
        text, finish, usage = [], "stop", None
        try:
            for chunk in response:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    piece = (choice.delta.content if "messages" in args else choice.text) or ""
                    if piece:
                        text.append(piece)
                        yield StreamEvent(delta=piece)
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
        finally:
            response.close()  # a consumer that stops reading closes the connection: the server stops generating
        yield StreamEvent(
            result=GenerationResult(
                text="".join(text),
                finish_reason=finish,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                model=request.model.key,
            )
        )


def _translate(exc) -> InferenceError:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    message = (error.get("message") if isinstance(error, dict) else None) or str(exc)
    code = error.get("code") if isinstance(error, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    if code == "context_length_exceeded" or "context length" in message.lower():
        return ContextLengthExceeded(message, param=param)
    if exc.status_code == 400:
        return InvalidSampling(message, param=param)
    return ModelUnavailable(f"the inference server answered {exc.status_code}: {message}")
