"""What stops a spoken reply from running away: repetition, and a length backstop.

A small model can degenerate into saying one sentence over and over, and nothing but
the reply cap (`max_tokens`, sent to the server) ends it; on a call that is minutes of
speech. `ReplyGuard` watches the text of one generation as it streams:

- **repetition**: once the same sentence (compared case- and punctuation-blind) has
  been said `repetition_limit` times, the reply ends before that copy. Text that could
  be the next copy is held back until its sentence ends, so the copy that trips the
  guard is never spoken; everything else passes through as it arrives. Sentences
  shorter than `MIN_REPEAT_CHARS` are not counted ("No. No. No." is speech).
- **length backstop**: a server that ignores the cap (a wrong parameter name, an old
  OpenAI-compatible server) is cut once the reply passes `BACKSTOP_CHARS_PER_TOKEN`
  characters per token of the cap. English averages about 4 characters per token, so a
  server that honours the cap always ends first.

`BaseAgent.llm_node` runs it on LiveKit's default LLM node: the reply ends there and
then (the turn finishes normally with what was said) and the event is recorded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

MIN_REPEAT_CHARS = 12
BACKSTOP_CHARS_PER_TOKEN = 6

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)|\n")
_NOT_WORD = re.compile(r"[\W_]+")

Stop = Literal["repetition", "length"]


@dataclass(frozen=True)
class ReplyLimits:
    """An agent's reply limits: the cap sent to the server and the repetition limit
    (None: the guard is off)."""

    max_tokens: int
    repetition_limit: int | None

    @property
    def max_chars(self) -> int:
        return self.max_tokens * BACKSTOP_CHARS_PER_TOKEN


def _key(text: str) -> str:
    return _NOT_WORD.sub(" ", text.lower()).strip()


class ReplyGuard:
    """One generation's guard: `feed` each text delta, emit what it returns, and stop
    when it says so; `finish` at the end of the stream."""

    def __init__(self, limits: ReplyLimits) -> None:
        self._limits = limits
        self._seen: Counter[str] = Counter()
        self._sentence = ""
        self._emitted = 0
        """How much of `_sentence` has been passed on."""
        self._chars = 0
        """Characters of completed sentences."""
        self.stopped: Stop | None = None
        self.repeated: str | None = None
        """The sentence that tripped the repetition guard."""

    def feed(self, text: str) -> str:
        """The part of `text` (plus held-back text) to pass on now; `stopped` is set
        when the reply must end here."""
        if self.stopped is not None:
            return ""
        self._sentence += text
        out: list[str] = []
        while self.stopped is None:
            m = _SENTENCE_END.search(self._sentence)
            if m is None:
                break
            done, self._sentence = self._sentence[: m.end()], self._sentence[m.end() :]
            if self._repeats(done):
                break
            out.append(done[self._emitted :])
            self._emitted = 0
            self._chars += len(done)
        if self.stopped is None and not self._at_risk(self._sentence):
            out.append(self._sentence[self._emitted :])
            self._emitted = len(self._sentence)
        if self.stopped is None and self._chars + len(self._sentence) > self._limits.max_chars:
            self.stopped = "length"
        return "".join(out)

    def finish(self) -> str:
        """Held-back text at the end of the stream (an unterminated last sentence)."""
        if self.stopped is not None or not self._sentence:
            return ""
        tail = self._sentence
        if self._repeats(tail):
            return ""
        self._sentence = ""
        return tail[self._emitted :]

    def _repeats(self, sentence: str) -> bool:
        limit = self._limits.repetition_limit
        key = _key(sentence)
        if limit is None or len(key) < MIN_REPEAT_CHARS:
            return False
        self._seen[key] += 1
        if self._seen[key] >= limit:
            self.stopped, self.repeated = "repetition", sentence.strip()
            return True
        return False

    def _at_risk(self, partial: str) -> bool:
        """Could `partial`, once its sentence ends, be a copy that trips the guard?"""
        limit = self._limits.repetition_limit
        if limit is None:
            return False
        key = _key(partial)
        return any(n >= limit - 1 and k.startswith(key) for k, n in self._seen.items())
