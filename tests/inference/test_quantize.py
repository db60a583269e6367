import torch
from torch import nn

from apps.inference.quantize import DECODE_ROWS, Int8DecodeLinear, quantize_for_decoding


def test_int8_decode_linear_is_close_to_the_bfloat16_linear():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=True).to(torch.bfloat16)
    q = Int8DecodeLinear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.scales.shape == (96,)
    for rows in (1, DECODE_ROWS, DECODE_ROWS + 5):  # the int8 kernel, then the bfloat16 weight
        x = torch.randn(rows, 64, dtype=torch.bfloat16)
        expected = linear(x).float()
        got = q(x).float()
        assert got.shape == expected.shape
        relative = (got - expected).norm() / expected.norm()
        assert relative < 0.02, (rows, relative)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)  # batch and sequence dimensions are kept
    assert q(x).shape == (2, 3, 96)


def test_quantize_replaces_every_linear_and_unties_the_head(tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.bfloat16)
    assert model.config.tie_word_embeddings
    quantize_for_decoding(model)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert isinstance(model.lm_head, Int8DecodeLinear)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(input_ids=ids).logits.shape == (1, 4, model.config.vocab_size)
