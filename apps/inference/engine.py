"""Choosing an engine. Both engines take a GenerationRequest and give a GenerationResult or a stream of events."""

from __future__ import annotations

from apps.inference.types import Engine


def create_engine(backend: str, **options) -> Engine:
    # Imported here, not above, though no cycle is involved: each engine's module pulls in its heavy library
    # (torch and transformers for the local one, the openai client for the remote one), and a process loads
    # only the one it runs; the web tier, on the remote engine, never imports torch.
    if backend == "local":
        from apps.inference.local import LocalEngine

        return LocalEngine(**options)
    if backend == "remote":
        from apps.inference.remote import RemoteEngine

        return RemoteEngine(**options)
    raise ValueError(f"unknown inference backend {backend!r}: use 'local' or 'remote'")
