"""The trainer on the tiny model: LoRA, full and continued pre-training; checkpoints that resume; stopping."""

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.tuning.trainer.train import TrainConfig, run_training

PIRATE = "Arr, matey! "


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    """A style to learn: every answer opens with the same pirate phrase."""
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    topics = ["the weather", "cats", "rice", "the sea", "colors", "Paris", "music", "trees"]
    rows = [
        {"messages": [{"role": "user", "content": f"Tell me about {t}."}, {"role": "assistant", "content": PIRATE + f"{t} be fine."}]}
        for t in (rng.choice(topics) for _ in range(24))
    ]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:6]) + "\n")
    return folder / "train.jsonl", folder / "val.jsonl"


class Recorder:
    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.steps, self.checkpoints, self.start = stop_at, [], [], None
        self.metrics = []

    def on_start(self, *, total_steps, resumed_from_step):
        self.start = (total_steps, resumed_from_step)

    def on_step(self, *, step, total_steps, metrics):
        self.metrics.append((step, metrics))
        if "loss" in metrics:
            self.steps.append(step)

    def on_checkpoint(self, *, step, path):
        self.checkpoints.append(step)

    def should_stop(self):
        return self.stop_at is not None and bool(self.steps) and self.steps[-1] >= self.stop_at


def config(tiny_hf_dir, tmp_path, train, **kw):
    return TrainConfig(
        base_model=str(tiny_hf_dir), train_file=str(train), output_dir=str(tmp_path / "out"),
        work_dir=str(tmp_path / "work"), max_length=64, batch_size=4, save_steps=4, base_model_id="tiny@v1", **kw,
    )


def losses(recorder):
    return [m["loss"] for _, m in recorder.metrics if "loss" in m]


def test_lora_learns_and_saves_a_peft_adapter(tiny_hf_dir, tmp_path, chat_files):
    train, val = chat_files
    recorder = Recorder()
    result = run_training(config(tiny_hf_dir, tmp_path, train, validation_file=str(val), n_epochs=3), recorder)
    assert result.status == "completed" and result.steps == result.total_steps == 18
    assert recorder.start == (18, 0)
    assert losses(recorder)[-1] < losses(recorder)[0]
    assert result.val_loss_after < result.val_loss_before
    assert all("tokens_per_second" in m and "learning_rate" in m for _, m in recorder.metrics if "loss" in m)
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("*.bin"))
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny@v1" and adapter["r"] == 16
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} >= {"q_proj", "v_proj", "o_proj", "down_proj"}

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_hf_dir), out)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(base(input_ids=ids).logits, tuned(input_ids=ids).logits)


def test_full_fine_tuning_saves_full_weights(tiny_hf_dir, tmp_path, chat_files):
    train, _ = chat_files
    recorder = Recorder()
    result = run_training(config(tiny_hf_dir, tmp_path, train, method="full", n_epochs=2, learning_rate=1e-3), recorder)
    assert result.status == "completed"
    assert losses(recorder)[-1] < losses(recorder)[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.config.num_hidden_layers == 2


def test_continued_pretraining_on_plain_text(tiny_hf_dir, tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("\n\n".join(f"Chapter {i}. The ship sailed north along the cold coast." for i in range(40)))
    recorder = Recorder()
    result = run_training(config(tiny_hf_dir, tmp_path, text, method="pretrain", n_epochs=2), recorder)
    assert result.status == "completed" and result.steps > 0
    assert losses(recorder)[-1] < losses(recorder)[0]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_a_stopped_run_resumes_from_its_last_checkpoint(tiny_hf_dir, tmp_path, chat_files):
    train, _ = chat_files
    first = Recorder(stop_at=6)
    stopped = run_training(config(tiny_hf_dir, tmp_path, train, n_epochs=3), first)
    # Asked to stop once step 6 is logged; the check runs at the end of each step, so training ends after step 7.
    assert stopped.status == "stopped" and stopped.steps == 7
    assert first.checkpoints == [4] and not (tmp_path / "out").exists()

    second = Recorder()
    done = run_training(config(tiny_hf_dir, tmp_path, train, n_epochs=3), second)
    assert done.status == "completed" and done.resumed_from_step == 4
    assert second.start == (18, 4)
    assert second.steps[0] == 5 and second.steps[-1] == 18  # the step counter went on, not back to 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
