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
