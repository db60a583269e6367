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


def test_wide_calls_multiply_in_float32_where_bfloat16_has_no_native_kernels(tiny_hf_dir, monkeypatch):
    """On a CPU with AVX2 alone, torch's bfloat16 matmul costs a one-row call per row: the prompt's calls go through
    float32 instead; one-row calls (decoding) stay bfloat16. Same parameters, same answers."""
    from transformers import AutoModelForCausalLM

    from apps.inference import quantize

    monkeypatch.setattr(quantize, "bf16_matmul_native", lambda: False)
    reference = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.bfloat16).eval()
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.bfloat16).eval()
    keys = set(model.state_dict())
    quantize.fit_for_cpu(model)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert set(model.state_dict()) == keys and model.lm_head.weight is model.model.embed_tokens.weight  # still tied

    with torch.inference_mode():
        expected = {rows: reference(input_ids=torch.arange(1, rows + 1)[None]).logits.float() for rows in (1, 8)}
    calls = []
    linear = nn.functional.linear

    def recorded(x, weight, bias=None):
        calls.append((x.numel() // x.shape[-1], x.dtype, weight.dtype))
        return linear(x, weight, bias)

    monkeypatch.setattr(nn.functional, "linear", recorded)
    for rows in (1, 8):
        ids = torch.arange(1, rows + 1)[None]
        calls.clear()
        with torch.inference_mode():
            got = model(input_ids=ids).logits.float()
        assert (got - expected[rows]).norm() / expected[rows].norm() < 0.02, rows
        wide = rows >= quantize.WIDE_ROWS
        layers = [call for call in calls if call[0] == rows]
        assert layers and all(call[1:] == ((torch.float32,) * 2 if wide else (torch.bfloat16,) * 2) for call in layers), rows


def test_bfloat16_stays_where_the_cpu_has_native_kernels(tiny_hf_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from apps.inference import quantize

    monkeypatch.setattr(quantize, "bf16_matmul_native", lambda: True)
    model = quantize.fit_for_cpu(AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.bfloat16))
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    x = torch.randn(16, 64, dtype=torch.bfloat16)
    weight = torch.randn(96, 64, dtype=torch.bfloat16)
    assert torch.equal(quantize.wide_linear(x, weight, None, 16), nn.functional.linear(x, weight))


def test_the_output_head_goes_float32_only_for_many_rows(monkeypatch):
    """Converting a large head's weights costs as much as dozens of bfloat16 rows: decoding a batch keeps it."""
    from apps.inference import quantize

    monkeypatch.setattr(quantize, "bf16_matmul_native", lambda: False)
    head, layer = torch.zeros(quantize.LARGE_WEIGHT + 1, dtype=torch.bfloat16), torch.zeros(64, dtype=torch.bfloat16)
    assert quantize.wide_rows(head) == quantize.WIDE_ROWS_LARGE > 16 and quantize.wide_rows(layer) == quantize.WIDE_ROWS
    linear = Int8DecodeLinear(nn.Linear(64, 96).to(torch.bfloat16))
    dtypes = []
    original = nn.functional.linear
    monkeypatch.setattr(nn.functional, "linear", lambda x, w, b=None: dtypes.append(x.dtype) or original(x, w, b))
    linear(torch.randn(DECODE_ROWS + 1, 64, dtype=torch.bfloat16))  # past the int8 kernel: the wide path
    assert dtypes == [torch.float32]
