"""The evaluation gate's measurements in the trainer (no Django): the held-out split, base against tuned on it (loss,
exact match, answer pairs), and the current version measured on the same data."""

import json

import pytest

from apps.tuning.trainer.evaluation import BEFORE_FILE, exact_match, holdout_size, holdout_split, prompts_of
from apps.tuning.trainer.train import run_training
from tests.tuning.test_trainer import Recorder, chat_files, config  # noqa: F401 - chat_files: the fixture


@pytest.mark.parametrize(("examples", "held"), [(10, 0), (12, 0), (13, 3), (24, 3), (50, 5), (200, 20)])
def test_a_tenth_is_held_out_at_least_three_and_never_below_a_training_files_minimum(examples, held):
    assert holdout_size(examples) == held


def test_the_split_is_seeded_and_keeps_every_example_once():
    rows = [{"n": i} for i in range(40)]
    train, held = holdout_split(rows, seed=7)
    assert len(held) == 4 and len(train) == 36
    assert sorted(r["n"] for r in train + held) == list(range(40))
    assert holdout_split(rows, seed=7) == (train, held)  # a resumed attempt holds out the same ones
    assert holdout_split(rows, seed=8)[1] != held
    assert holdout_split(rows[:12], seed=7) == (rows[:12], [])  # too small: trains on all


def test_exact_match_normalises_whitespace_only():
    prompts = prompts_of([{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Arr,  matey!\n"}]},
                          {"prompt": "2+2=", "completion": " 4"}])
    assert [p["prompt"] for p in prompts] == ["Q?", "2+2="]
    assert exact_match(["Arr, matey!", "4"], prompts) == 1.0
    assert exact_match(["arr, matey!", "4."], prompts) == 0.0
    assert prompts_of([{"text": "plain"}]) == [] and exact_match([], []) is None


def test_a_job_without_a_validation_file_measures_base_and_tuned_on_a_held_out_split(tiny_hf_dir, tmp_path, chat_files):  # noqa: F811
    train, _ = chat_files  # 24 examples: 3 held out, 21 trained on
    cfg = config(tiny_hf_dir, tmp_path, train, n_epochs=3, compare={"reference": "tiny@v1", "model": str(tiny_hf_dir)})
    recorder = Recorder()
    result = run_training(cfg, recorder)
    assert result.status == "completed" and result.total_steps == 18  # ceil(21 / 4) x 3
    ev = result.evaluation
    assert ev["split"] == {"source": "held_out", "examples": 3, "seed": 42}
    assert result.val_loss_before == ev["base"]["loss"] and result.val_loss_after == ev["tuned"]["loss"]
    assert ev["tuned"]["loss"] < ev["base"]["loss"]  # the held-out answers share the taught phrase
    # The version `latest` names (here the base itself) measured on the same examples: the base's loss.
    assert ev["current"]["reference"] == "tiny@v1" and ev["current"]["loss"] == pytest.approx(ev["base"]["loss"], rel=1e-4)
    assert ev["exact_match_items"] == 3 and 0 <= ev["base"]["exact_match"] <= ev["tuned"]["exact_match"] <= 1
    assert len(ev["pairs"]) == 3 and all(p["expected"].startswith("Arr, matey!") for p in ev["pairs"])
    assert all(isinstance(p["base"], str) and isinstance(p["tuned"], str) for p in ev["pairs"])
    assert any(p["base"] != p["tuned"] for p in ev["pairs"])
    # The base's figures were kept for a resumed attempt; the validation curve came from the split.
    assert json.loads((tmp_path / "work" / BEFORE_FILE).read_text())["base"]["loss"] == ev["base"]["loss"]
    assert any("eval_loss" in m for step, m in recorder.metrics if step > 0)
