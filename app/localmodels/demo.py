"""The `--demo` model: a scripted support call, offline, with nothing to download.

`python -m app dev --demo` serves this beside the platform so a newcomer can talk to the
seeded support agent (`chat`, or the console's Talk page) without any key or model. It
is a real OpenAI-compatible server (`app.localmodels.server`), so the agent, its tools
and the session record all run for real; only the "model" is a script, which reads
the request the agent sent and does what a good model would do next:

- after the greeting, the caller's first words are recorded as the problem description;
- it then asks for each required field of the agent's data schema that is still missing
  (in the schema's order), and records the caller's answer with that field's `record_*`
  tool: the value is taken from the words (an order number matching the field's
  pattern, the enum value the words point to, a name after "I'm" / "my name is");
  a value the tool refuses is asked for again;
- with everything recorded it sums up and asks if there is anything else; a goodbye
  (or "no") calls `end_session`, and the tool's answer gets a goodbye.

Speech, for the Talk page: the "recogniser" does not listen. It answers each upload with
what a caller would say to the question the demo asked last (a name, an order number,
...), and the "voice" is a soft tone as long as the text would take to say.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.localmodels import wire
from app.localmodels.backend import ModelError, Transcription

MODEL = "demo"
GOODBYE = re.compile(r"\b(bye|goodbye|that'?s all|that is all|nothing else|no thanks|no thank you|hang up)\b", re.I)
NO = re.compile(r"^\s*(no|nope|nah)\b", re.I)
NAME = re.compile(r"\b(?:my name is|name'?s|i am|i'm|this is|it'?s)\s+([A-Za-z][A-Za-z' -]{0,60})", re.I)

QUESTIONS = {
    "caller_name": "May I have your name, please?",
    "order_id": "What's the order number? It's two letters followed by six to eight digits.",
    "description": "Could you describe the problem in a sentence or two?",
}
CALLER_SAYS = {
    None: "Hi, my parcel arrived damaged and I need a replacement before Friday.",
    "caller_name": "My name is Ada Lovelace.",
    "order_id": "It's A B 1 2 3 4 5 6.",
    "issue_category": "It arrived damaged.",
    "urgency": "It's quite urgent, high I'd say.",
    "description": "The parcel arrived with a cracked screen and I need a replacement.",
    "anything_else": "No, that's all. Bye!",
}
SYNONYMS = {
    "damaged_or_wrong_item": ("damaged", "broken", "cracked", "wrong"),
    "delivery_problem": ("late", "missing", "never arrived", "delivery"),
    "return_or_refund": ("refund", "return", "money back"),
    "billing": ("charge", "charged", "invoice", "bill", "payment"),
    "account_access": ("password", "log in", "login", "sign in", "account"),
    "technical_problem": ("not working", "error", "crash", "bug", "app"),
    "order_status": ("where is my order", "status", "tracking"),
    "critical": ("critical", "emergency", "fraud", "danger"),
    "high": ("urgent", "high", "asap", "right away"),
    "medium": ("medium", "soon", "workaround"),
    "low": ("low", "no rush", "not urgent", "whenever"),
}


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool: str | None = None
    arguments: Mapping[str, Any] | None = None


def _text(content: object) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class DemoScript:
    """Decides the next reply from the request alone (no state), so any number of
    conversations can run at once; `last_asked` only feeds the demo recogniser."""

    def __init__(self) -> None:
        self.last_asked: str | None = None

    def reply(self, body: Mapping[str, Any]) -> Reply:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        tools = {}
        for t in body.get("tools") or []:
            fn = t.get("function") if isinstance(t, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                tools[fn["name"]] = fn
        if body.get("tool_choice") == "none":
            tools = {}
        fields = {name[len("record_"):]: fn for name, fn in tools.items() if name.startswith("record_") and name != "record_data"}
        required = self._required(fields, messages)
        recorded = self._recorded(messages)
        last = messages[-1] if messages else {}
        called = self._called_tool(messages, last)
        if called == "end_session":
            self.last_asked = None
            return Reply("Thank you for calling. Goodbye!")
        if called is not None and called.startswith("record_"):
            if _text(last.get("content")).startswith("Error"):
                return self._ask(called[len("record_"):], fields, again=True)
            return self._next_question(fields, required, recorded)
        user = _text(last.get("content")) if last.get("role") == "user" else ""
        if not tools:
            return Reply("This is the demo model: it follows a scripted support call. "
                         "Start the demo with the seeded support agent to see it record details.")
        asked = self._asked_field(messages, fields)
        if user and (GOODBYE.search(user) or (asked == "anything_else" and NO.search(user))) and "end_session" in tools:
            return Reply(tool="end_session", arguments={"reason": "caller said goodbye"})
        if asked is None and "description" in fields and "description" not in recorded and len(user) >= 10:
            return Reply(tool="record_description", arguments={"value": user.strip()})  # the caller's opening words
        if asked is not None and asked in fields and user:
            value = self._value(fields[asked], user)
            if value is not None:
                return Reply(tool=f"record_{asked}", arguments={"value": value})
            return self._ask(asked, fields, again=True)
        return self._next_question(fields, required, recorded)

    # -------------------------------------------------------------- conversation state

    @staticmethod
    def _required(fields: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> list[str]:
        req = [f for f, fn in fields.items() if "(required)" in str(fn.get("description", ""))]
        return req or list(fields)

    @staticmethod
    def _recorded(messages: Sequence[Mapping[str, Any]]) -> set[str]:
        done: set[str] = set()
        for m in messages:
            if m.get("role") == "tool":
                done.update(re.findall(r"(?:Recorded |, )([a-z_][a-z0-9_]*)=", _text(m.get("content"))))
        return done

    @staticmethod
    def _called_tool(messages: Sequence[Mapping[str, Any]], last: Mapping[str, Any]) -> str | None:
        if last.get("role") != "tool":
            return None
        call_id = last.get("tool_call_id")
        for m in reversed(messages):
            for c in m.get("tool_calls") or []:
                if isinstance(c, dict) and c.get("id") == call_id:
                    return str((c.get("function") or {}).get("name", ""))
        return None

    def _asked_field(self, messages: Sequence[Mapping[str, Any]], fields: Mapping[str, Any]) -> str | None:
        """Which of our questions the caller is answering (our last assistant words)."""
        for m in reversed(messages[:-1]):
            if m.get("role") == "assistant" and _text(m.get("content")):
                said = _text(m.get("content"))
                if said.endswith("Is there anything else I can help with?"):
                    return "anything_else"
                for f in fields:
                    if said.endswith(self._question(f, fields[f])):
                        return f
                return None
        return None

    def _next_question(self, fields: Mapping[str, Any], required: list[str], recorded: set[str]) -> Reply:
        missing = [f for f in required if f not in recorded]
        if missing:
            return self._ask(missing[0], fields, ack="Got it. ")
        self.last_asked = "anything_else"
        return Reply("Thanks, I have everything the support team needs, and they will follow up soon. "
                     "Is there anything else I can help with?")

    def _ask(self, field: str, fields: Mapping[str, Any], *, again: bool = False, ack: str = "") -> Reply:
        self.last_asked = field
        lead = "Sorry, I didn't catch that. " if again else ack
        return Reply(lead + self._question(field, fields[field]))

    @staticmethod
    def _question(field: str, fn: Mapping[str, Any]) -> str:
        if field in QUESTIONS:
            return QUESTIONS[field]
        enum = _value_schema(fn).get("enum")
        spoken = field.replace("_", " ")
        if isinstance(enum, list) and enum:
            options = [str(v).replace("_", " ") for v in enum]
            choices = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
            return f"Which {spoken} fits best: {choices}?"
        return f"What is the {spoken}?"

    # ------------------------------------------------------------------- values

    @staticmethod
    def _value(fn: Mapping[str, Any], said: str) -> Any:
        schema = _value_schema(fn)
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return _pick(enum, said)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            compact = re.sub(r"[\s.,-]", "", said).upper()
            try:
                m = re.search(pattern.strip("^$"), compact)
            except re.error:
                m = None
            return m.group(0) if m else None
        if "name" in str(fn.get("name", "")):
            m = NAME.search(said)
            name = (m.group(1) if m else said).strip(" .!?")
            return " ".join(w.capitalize() for w in name.split()[:4]) or None
        return said.strip() or None


def _value_schema(fn: Mapping[str, Any]) -> Mapping[str, Any]:
    params = fn.get("parameters") or {}
    value = (params.get("properties") or {}).get("value") if isinstance(params, dict) else None
    return value if isinstance(value, dict) else {}


def _pick(enum: list[Any], said: str) -> Any:
    low = said.lower()
    for v in enum:
        if any(w in low for w in SYNONYMS.get(str(v), ())):
            return v
    words = set(re.findall(r"[a-z]+", low))
    best = max(enum, key=lambda v: len(words & set(str(v).lower().split("_"))))
    return best if words & set(str(best).lower().split("_")) else None


class DemoBackend:
    kind = "demo"

    def __init__(self) -> None:
        self.script = DemoScript()

    def describe(self) -> dict[str, Any]:
        return {"llm": "demo-script", "stt": "demo-caller", "tts": "demo-tone"}

    async def chat(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise ModelError(400, "messages must be a non-empty list", param="messages")
        reply = self.script.reply(body)
        cid, model = wire.completion_id(), str(body.get("model") or MODEL)
        yield wire.chunk(cid, model, {"role": "assistant", "content": ""})
        if reply.tool is not None:
            args = json.dumps(dict(reply.arguments or {}))
            yield wire.chunk(cid, model, wire.tool_call_delta(0, f"call_{cid[-8:]}", reply.tool, args))
            yield wire.chunk(cid, model, {}, "tool_calls")
        else:
            for piece in wire.text_pieces(reply.text):
                await asyncio.sleep(0)
                yield wire.chunk(cid, model, {"content": piece})
            yield wire.chunk(cid, model, {}, "stop")
        yield wire.usage_chunk(cid, model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})

    async def transcribe(self, audio: bytes, *, language: str | None, prompt: str | None,
                         temperature: float) -> Transcription:
        text = CALLER_SAYS.get(self.script.last_asked, CALLER_SAYS[None])
        return Transcription(text, "en", 0.0, [])

    async def speak(self, text: str, *, voice: str, speed: float, fmt: str) -> AsyncIterator[bytes]:
        from app.localmodels.tts import encode

        yield await asyncio.to_thread(encode, _tone(len(text) * 0.06 / speed), fmt)

    async def aclose(self) -> None:
        return None


def _tone(seconds: float) -> Any:
    import numpy as np

    n = max(1, int(seconds * wire.SPEECH_RATE))
    t = np.arange(n) / wire.SPEECH_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return (1500 * fade * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
