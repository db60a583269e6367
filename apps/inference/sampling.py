"""Per-request token choice: penalties, temperature, top-k, top-p, and a random generator of the request's own.

One generator per request means a seeded request draws the same random numbers whether it ran alone or beside
others in a batch.
"""

from __future__ import annotations

import torch
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from apps.inference.types import SamplingParams


class TokenSampler:
    def __init__(self, params: SamplingParams, *, device: str = "cpu"):
        self.params = params
        self.needs_history = params.repetition_penalty != 1.0 or params.no_repeat_ngram_size > 0
        penalties = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            penalties.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if params.no_repeat_ngram_size > 0:
            penalties.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
        self.penalties = penalties
        warpers = LogitsProcessorList()
        if not params.greedy:
            if params.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                warpers.append(TopPLogitsWarper(params.top_p))
        self.warpers = warpers
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self.generator.manual_seed(seed)

    def choose(self, logits: torch.Tensor, history: list[int] | None) -> int:
        """logits: [vocab] float32 for this request's next token; history: the ids the penalties count (prompt +
        generated, or generated only when `penalize_prompt` is off)."""
        scores = logits.unsqueeze(0)
        if self.needs_history and history:
            ids = torch.tensor([history], dtype=torch.long, device=logits.device)
            scores = self.penalties(ids, scores)
        else:
            ids = None
        if self.params.greedy:
            return int(scores.argmax(dim=-1).item())
        scores = self.warpers(ids, scores) if self.warpers else scores
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator).item())


def beam_penalties(params: SamplingParams, *, prompt_length: int) -> dict:
    """The repetition penalty as arguments of transformers' `generate` (beam search): over the answer alone when
    the prompt is not to be penalised (the processor's `prompt_ignore_length`)."""
    if params.penalize_prompt or params.repetition_penalty == 1.0:
        return {"repetition_penalty": params.repetition_penalty}
    return {"logits_processor": LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(params.repetition_penalty, prompt_ignore_length=prompt_length)])}
