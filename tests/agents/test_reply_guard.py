"""The reply guard on its own (`app.agents.reply_guard`), fed text the way an LLM streams
it: in fragments that split words and sentences anywhere."""

from __future__ import annotations

import pytest

from app.agents.reply_guard import BACKSTOP_CHARS_PER_TOKEN, ReplyGuard, ReplyLimits

LOOP = "I can help you with your order. "


def run(text: str, *, size: int = 5, limit: int | None = 3, max_tokens: int = 10_000) -> tuple[str, ReplyGuard]:
    """Stream `text` in `size`-character fragments; what the caller would have heard."""
    guard = ReplyGuard(ReplyLimits(max_tokens=max_tokens, repetition_limit=limit))
    out = []
    for i in range(0, len(text), size):
        out.append(guard.feed(text[i : i + size]))
        if guard.stopped:
            break
    out.append(guard.finish())
    return "".join(out), guard


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_a_sentence_said_the_limit_times_ends_the_reply_before_that_copy(size: int) -> None:
    said, guard = run("Sure. " + LOOP * 30, size=size)
    assert said == ("Sure. " + LOOP * 2).rstrip()  # the space before the dropped copy is its own
    assert guard.stopped == "repetition"
    assert guard.repeated == LOOP.strip()


def test_copies_differing_in_case_punctuation_and_spacing_count_as_the_same_sentence() -> None:
    text = "I can help you with your order! i can help you, with your order.\nI CAN HELP YOU WITH YOUR ORDER?? And more."
    said, guard = run(text, size=4)
    assert said == "I can help you with your order! i can help you, with your order.\n"
    assert guard.stopped == "repetition"


def test_text_that_only_starts_like_a_repeated_sentence_is_passed_on() -> None:
    text = LOOP * 2 + "I can help you with your refund as well. Goodbye."
    said, guard = run(text, size=6)
    assert said == text
    assert guard.stopped is None


def test_an_unterminated_last_copy_is_dropped_at_the_end_of_the_stream() -> None:
    said, guard = run(LOOP * 2 + "I can help you with your order", size=9)
    assert said == (LOOP * 2).rstrip()
    assert guard.stopped == "repetition"


def test_short_sentences_and_a_normal_reply_pass_unchanged() -> None:
    text = "No. No. No. No. Okay, let me check that for you. Your order AB123 ships tomorrow. Anything else?"
    said, guard = run(text, size=2)
    assert said == text and guard.stopped is None


def test_the_guard_off_passes_any_repetition() -> None:
    said, guard = run(LOOP * 10, limit=None)
    assert said == LOOP * 10 and guard.stopped is None


def test_a_limit_of_two_stops_at_the_first_repeat() -> None:
    said, _ = run(LOOP * 5, limit=2)
    assert said == LOOP.rstrip()


def test_nothing_is_held_back_when_no_sentence_is_at_risk() -> None:
    """Latency: a normal reply streams through fragment by fragment, not sentence by sentence."""
    guard = ReplyGuard(ReplyLimits(max_tokens=1000, repetition_limit=3))
    assert guard.feed("Hel") == "Hel"
    assert guard.feed("lo there, how") == "lo there, how"
    assert guard.feed(" are you? I") == " are you? I"


def test_the_length_backstop_cuts_a_reply_the_server_did_not_cap() -> None:
    words = " ".join(f"word{i}" for i in range(2000)) + "."
    said, guard = run(words, size=11, max_tokens=20)
    assert guard.stopped == "length"
    assert 20 * BACKSTOP_CHARS_PER_TOKEN <= len(said) <= 20 * BACKSTOP_CHARS_PER_TOKEN + 11
    assert words.startswith(said)
