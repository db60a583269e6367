"""Choosing an engine. Both engines take a GenerationRequest and give a GenerationResult or a stream of events."""

from __future__ import annotations

from apps.inference.types import Engine


def create_engine(backend: str, **options) -> Engine:
    if backend == "local":
        from apps.inference.local import LocalEngine

        return LocalEngine(**options)
    if backend == "remote":
        from apps.inference.remote import RemoteEngine

        return RemoteEngine(**options)
    raise ValueError(f"unknown inference backend {backend!r}: use 'local' or 'remote'")
