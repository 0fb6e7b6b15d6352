"""Word error rate between what was said and what a real recogniser heard.

Whisper writes "about $5,000 a month." for "about five thousand dollars a month", and
"12" for "twelve": both sides are normalised before counting (lower case, punctuation
and apostrophes dropped, number words and digit groups turned into one number, "$N" into
"N dollars", a code spelled out joined: "a b 1 2 3" and "AB123" compare equal), then WER = word edits (substitutions, insertions, deletions) / reference words.
"""

from __future__ import annotations

import re

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
_WORD = re.compile(r"[a-z0-9]+")


def _numbers(words: list[str]) -> list[str]:
    """Runs of number words ("two hundred and five") become their value ("205")."""
    out: list[str] = []
    total = current = 0
    in_number = False

    def flush() -> None:
        nonlocal total, current, in_number
        if in_number:
            out.append(str(total + current))
        total = current = 0
        in_number = False

    for w in words:
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w in _SCALES and in_number:
            scale = _SCALES[w]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        elif w == "and" and in_number:
            continue
        else:
            flush()
            out.append(w)
            continue
        in_number = True
    flush()
    return out


def normalise(text: str) -> list[str]:
    t = text.lower()
    t = re.sub(r"\$\s?([\d,.]+)", r"\1 dollars", t)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 5,000 -> 5000
    t = t.replace("'", "").replace("\u2019", "").replace("-", " ")
    words = _numbers(_WORD.findall(t))
    # a code spelled out ("a b 1 2 3 4") compares as written ("ab1234"): runs of three or
    # more one-character tokens holding a digit are joined
    out: list[str] = []
    run: list[str] = []
    for w in [*words, ""]:
        if len(w) == 1:
            run.append(w)
            continue
        if len(run) >= 3 and any(c.isdigit() for c in run):
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if w and w.isdigit() and len(w) >= 3 and out and re.fullmatch(r"[a-z]{1,3}", out[-1]):
            out[-1] += w  # "AB-1234567" / "AB 1234567": the code as one token
        elif w:
            out.append(w)
    return out


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
