"""Weight-only int8 for CPU decoding, where reading the weights is the cost of every token.

Each linear layer keeps its bfloat16 weight and gains an int8 copy with one scale per output channel. A call with
at most DECODE_ROWS rows (decoding a few sequences) multiplies with the int8 copy through torch's
`_weight_int8pack_mm` kernel, reading half the bytes; a larger call (a prompt, a big batch) is compute-bound
and uses the bfloat16 weight, for which the int8 kernel is slower (measured: 2-4x slower at 64-256 rows).
Activations stay bfloat16: quantizing them too (dynamic int8) made this model's answers ignore the question.

Wide calls on a CPU without native bfloat16 matrix kernels. oneDNN multiplies bfloat16 matrices with AVX-512 or
AMX; on a processor with AVX2 alone (some AMD EPYC machines here) torch falls back to a loop that costs as much per
row as a one-row call, so a 43-token prompt took 4.4x as long as in float32 and a 512-token one 8x (576x1536
layer, two threads). There a call of more than a few rows converts the weight to float32 and multiplies in float32
(`wide_linear`); one-row calls, which only read the weights, stay bfloat16 (its half-size reads are why decoding
is 27 tokens/s in bfloat16 against 16 in float32 on such a machine). `fit_for_cpu` applies this to a bfloat16 model
that is not quantized.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# Rows (tokens in one forward) up to which the int8 kernel wins here: at 8 rows it is about even with bfloat16.
DECODE_ROWS = 4
# Rows from which float32 (with the weight converted on the fly) beats a bfloat16 matmul without native kernels:
# for a layer that stays in cache, at 4 rows (0.43 against 0.44 ms, 8 rows 0.55 against 0.88; 576x1536, two
# threads, AVX2); for the output head over the 49k vocabulary (28M weights, whose conversion alone takes 65 ms)
# only at about 40 rows (43 rows: 120 against 146 ms; 16 rows: 98 against 57).
WIDE_ROWS = 4
WIDE_ROWS_LARGE = 40
LARGE_WEIGHT = 4_000_000  # weights: past this a layer's float32 copy no longer stays in cache


def wide_rows(weight: torch.Tensor) -> int:
    """Rows from which a call of this layer multiplies in float32 on a CPU without native bfloat16 kernels."""
    return WIDE_ROWS_LARGE if weight.numel() > LARGE_WEIGHT else WIDE_ROWS


@functools.cache
def bf16_matmul_native() -> bool:
    """Whether torch multiplies bfloat16 matrices with native kernels on this CPU (oneDNN: AVX-512 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: assume it does, as before
        return True


def wide_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> torch.Tensor:
    """`linear(x, weight, bias)` for a call of `rows` rows: in float32 when they are enough for that to pay where
    bfloat16 has no native kernel (`wide_rows`), else as it is."""
    if x.dtype != torch.bfloat16 or rows < wide_rows(weight) or bf16_matmul_native():
        return nn.functional.linear(x, weight, bias)
    return nn.functional.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


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
            return wide_linear(x, self.weight, self.bias, rows)
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


class WideFloat32Linear(nn.Linear):
    """A bfloat16 linear layer whose wide calls (a prompt, a big batch) multiply in float32 (`wide_linear`). The
    same parameters as the layer it replaces (a tied output head stays tied)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wide_linear(x, self.weight, self.bias, x.numel() // self.in_features)


def fit_for_cpu(model: nn.Module) -> nn.Module:
    """Make a bfloat16 model's linear layers multiply wide calls in float32 where this CPU has no native bfloat16
    kernels (in place; nothing changes where it has them)."""
    if bf16_matmul_native():
        return model
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.bfloat16:
            module.__class__ = WideFloat32Linear  # same parameters, same state dict
    return model
