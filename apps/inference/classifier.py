"""Classifiers (registry versions of task `classifier`): one forward pass over a batch of texts, the label and the
probability of each label per text. Always on transformers, whatever engine serves the chat models (llama.cpp and
vLLM have no classification head). No Django: the model server and the local engine both hold one.

A classifier folder is full weights that `AutoModelForSequenceClassification.from_pretrained` loads as they are
(safetensors only, no remote code), with `id2label` in its config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from apps.inference.cache import ModelCache
from apps.inference.loading import LoadedModel
from apps.inference.types import ContextLengthExceeded, ModelSpec, ModelUnavailable, classifier_inputs

logger = logging.getLogger(__name__)


@dataclass
class Classification:
    label: str
    scores: dict[str, float]  # every label's probability, in the model's label order
    tokens: int

    def as_dict(self) -> dict:
        return {"label": self.label, "scores": self.scores, "tokens": self.tokens}


def is_classifier_folder(path: str | Path) -> bool:
    """A registry folder whose config names a sequence-classification architecture."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ())


class ClassifierEngine:
    def __init__(self, *, max_cache_bytes: int = 2 * 2**30, device: str | None = None, dtype: str = "float32"):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self.cache = ModelCache(self._load, max_bytes=max_cache_bytes)
        self._lock = threading.Lock()  # one forward pass at a time: each already uses every core

    def _load(self, spec: ModelSpec) -> LoadedModel:
        if spec.kind != "full" or not is_classifier_folder(spec.path):
            raise ModelUnavailable(f"{spec.key} is not a classifier.")
        started = time.monotonic()
        try:
            # use_safetensors=True: a folder with only pickled weights fails instead of running a pickle.
            model = AutoModelForSequenceClassification.from_pretrained(spec.path, dtype=self.dtype, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(spec.path)
        except Exception as exc:
            raise ModelUnavailable(f"{spec.key} could not be loaded: {type(exc).__name__}: {exc}") from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
        model.to(self.device).eval()
        nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        logger.info("loaded classifier %s in %.1fs (%.0f MB)", spec.key, time.monotonic() - started, nbytes / 2**20)
        return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, eos_ids=frozenset(), nbytes=nbytes,
                           context_length=int(getattr(model.config, "max_position_embeddings", 2048)), device=self.device)

    def labels(self, spec: ModelSpec) -> list[str]:
        config = self.cache.get(spec).model.config
        return [config.id2label[i] for i in range(config.num_labels)]

    def context(self, spec: ModelSpec) -> int:
        return self.cache.get(spec).context_length

    def classify(self, spec: ModelSpec, texts) -> list[Classification]:
        """Each text's label and every label's probability, in one batched forward pass."""
        texts = classifier_inputs(texts)
        loaded = self.cache.get(spec)
        tokenizer, model = loaded.tokenizer, loaded.model
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > loaded.context_length:
                where = "The text" if len(texts) == 1 else f"input[{i}]"
                raise ContextLengthExceeded(f"{where} has {n} tokens; this classifier reads at most {loaded.context_length}.",
                                            param="input")
        batch = tokenizer(texts, padding=True, return_tensors="pt").to(loaded.device)
        with self._lock, torch.inference_mode():
            probabilities = model(**batch).logits.float().softmax(-1).cpu()
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        out = []
        for row, n in zip(probabilities.tolist(), lengths, strict=True):
            scores = {name: round(p, 6) for name, p in zip(names, row, strict=True)}
            out.append(Classification(label=max(scores, key=scores.get), scores=scores, tokens=n))
        return out
