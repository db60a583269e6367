"""Weight-only int8 for CPU decoding, where reading the weights is the cost of every token.

Each linear layer keeps its bfloat16 weight and gains an int8 copy with one scale per output channel. A call with
at most DECODE_ROWS rows (decoding a few sequences) multiplies with the int8 copy through torch's
`_weight_int8pack_mm` kernel, reading half the bytes; a larger call (a prompt, a big batch) is compute-bound
and uses the bfloat16 weight, for which the int8 kernel is slower (measured: 2-4x slower at 64-256 rows).
Activations stay bfloat16: quantizing them too (dynamic int8) made this model's answers ignore the question.
"""

from __future__ import annotations

import torch
from torch import nn

# Rows (tokens in one forward) up to which the int8 kernel wins here: at 8 rows it is about even with bfloat16.
DECODE_ROWS = 4


class Int8DecodeLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        w = weight.float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight_int8", torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.weight = nn.Parameter(weight.to(torch.bfloat16), requires_grad=False)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > DECODE_ROWS:
            return nn.functional.linear(x, self.weight, self.bias)
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(rows, self.in_features), self.weight_int8, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_for_decoding(model: nn.Module) -> nn.Module:
    """Swap every nn.Linear (the output head included) for Int8DecodeLinear, in place. CPU, bfloat16 only."""
    if getattr(model.config, "tie_word_embeddings", False):
        # The head gets int8 weights of its own; the embedding lookup keeps the bfloat16 table.
        model.config.tie_word_embeddings = False
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8DecodeLinear(child))
    return model
