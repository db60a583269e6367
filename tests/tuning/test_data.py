import json

import pytest

from apps.tuning.trainer.data import validate_file


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def chat(user="Hi", assistant="Hello!"):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def test_a_valid_chat_file(tmp_path):
    report = validate_file(write(tmp_path, [chat(f"q{i}", f"a{i}") for i in range(12)]), count_tokens=lambda e: 7)
    assert report.ok and report.format == "chat" and len(report.examples) == 12
    assert report.tokens == 84 and report.preview(2) == [chat("q0", "a0"), chat("q1", "a1")]


def test_prompt_completion_and_text(tmp_path):
    report = validate_file(write(tmp_path, [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]))
    assert report.ok and report.format == "prompt_completion"
    text = tmp_path / "book.txt"
    text.write_text("First paragraph.\n\nSecond paragraph.\n", encoding="utf-8")
    report = validate_file(text, expected="text", min_examples=1)
    assert report.ok and report.examples == [{"text": "First paragraph."}, {"text": "Second paragraph."}]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "line 3: not valid JSON"),
        ({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}, "line 3: message 1 has role 'wizard'"),
        ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}, "line 3: message 1 (user) has empty content"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "line 3: no assistant message"),
        ({"messages": []}, 'line 3: "messages" must be a non-empty list'),
        ({"text": "hello"}, 'line 3: expected an object with "messages"'),
        ({"prompt": "p", "completion": ""}, "line 3: this line is prompt_completion but the file started as chat"),
    ],
)
def test_each_problem_has_its_line_number(tmp_path, bad, message):
    lines = [chat(), chat(), bad] + [chat() for _ in range(10)]
    report = validate_file(write(tmp_path, lines))
    assert not report.ok
    assert any(str(p).startswith(message) for p in report.problems), [str(p) for p in report.problems]


def test_too_few_examples(tmp_path):
    report = validate_file(write(tmp_path, [chat() for _ in range(3)]))
    assert [str(p) for p in report.problems] == ["only 3 example(s); at least 10 are needed"]


def test_not_utf8_reports_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    assert [str(p) for p in validate_file(path).problems] == ["line 2: the file is not UTF-8 text"]


def test_too_large(tmp_path):
    path = write(tmp_path, [chat() for _ in range(20)])
    assert "the limit is 100" in str(validate_file(path, max_bytes=100).problems[0])


def test_example_longer_than_the_context(tmp_path):
    lines = [chat() for _ in range(11)] + [chat(assistant="long " * 50)]
    report = validate_file(write(tmp_path, lines), count_tokens=lambda e: len(json.dumps(e).split()), max_tokens=20)
    assert [p.line for p in report.problems] == [12]
    assert "the model's context is 20" in report.problems[0].message
