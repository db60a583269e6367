from apps.inference.textstream import TextAssembler


class CharTokenizer:
    """Each token id is one byte; decoding shows U+FFFD for an incomplete UTF-8 character, like real tokenizers."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def feed(assembler, text):
    pieces = [assembler.add(b) for b in text.encode()]
    return pieces + [assembler.flush()]


def test_stop_string_split_across_tokens_is_held_back_then_cut():
    a = TextAssembler(CharTokenizer(), stop=("END",))
    pieces = feed(a, "hello ENtity END more")
    assert "".join(pieces) == "hello ENtity "
    assert a.stopped and a.text == "hello ENtity "
    assert not any("END" in p for p in pieces)


def test_held_back_prefix_is_released_when_it_turns_out_not_to_stop():
    a = TextAssembler(CharTokenizer(), stop=("###",))
    assert "".join(feed(a, "a ## b #")) == "a ## b #"
    assert not a.stopped


def test_multibyte_characters_never_stream_half_written():
    a = TextAssembler(CharTokenizer())
    pieces = feed(a, "海浪 waves")
    assert "".join(pieces) == "海浪 waves"
    assert all("\ufffd" not in p for p in pieces)


def test_earliest_of_several_stop_strings_wins():
    a = TextAssembler(CharTokenizer(), stop=("two", "one"))
    assert "".join(feed(a, "zero one two")) == "zero "


def test_nul_characters_never_come_out():
    # The real tokenizer has a byte token for NUL and an untrained model emits it; PostgreSQL text refuses it, so an
    # answer holding one could stream but never be saved (CI found it: a random model's preview answer failed).
    a = TextAssembler(CharTokenizer())
    pieces = feed(a, "rain\x00 on\x00\x00 roofs " * 3)
    assert "".join(pieces) == "rain on roofs " * 3 and a.text == "rain on roofs " * 3
    assert all("\x00" not in p for p in pieces)
