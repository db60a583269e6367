"""One real fine-tune: LoRA on SmolLM2-135M-Instruct for a few steps on the CPU, then generation from it."""

import json

import pytest

from apps.inference.local import LocalEngine
from apps.inference.types import GenerationRequest, ModelSpec, SamplingParams
from apps.tuning.trainer.train import TrainConfig, run_training
from tests.tuning.test_jobs import chat_lines

pytestmark = pytest.mark.slow


def test_lora_on_the_real_base_model_trains_and_generates(real_hf_dir, tmp_path):
    data = tmp_path / "pirate.jsonl"
    data.write_text(chat_lines(24))
    result = run_training(TrainConfig(
        base_model=str(real_hf_dir), train_file=str(data), output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
        batch_size=4, max_steps=3, max_length=128, save_steps=100, base_model_id="smollm2-135m-instruct",
    ))
    assert result.status == "completed" and result.steps == 3
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m-instruct"
    engine = LocalEngine(dtype="float32")
    try:
        base = ModelSpec(key="smollm2-135m-instruct@v1", path=str(real_hf_dir))
        tuned = ModelSpec(key="ft:pirate@v1", path=str(tmp_path / "out"), kind="lora", base=base)
        answer = engine.generate(GenerationRequest(model=tuned, messages=[{"role": "user", "content": "Tell me about dogs."}],
                                                   params=SamplingParams(max_tokens=16, temperature=0)))
    finally:
        engine.close()
    assert answer.completion_tokens > 0 and answer.text.strip()
