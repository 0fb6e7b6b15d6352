"""Tool calls for models that have none: the offered tools become a grammar.

Small local models (SmolLM2's chat template drops `tools` entirely) never emit OpenAI
tool calls. So when a request offers tools, the server asks the model for one JSON
object per answer and constrains its decoding to a JSON Schema (llama.cpp grammars):

    {"action": "reply", "text": "what to say"}
    {"action": "<tool name>", "arguments": {...that tool's parameters schema...}}

The "action" key comes first, so the model commits to speaking or to a tool with its
first tokens; a tool's arguments then follow the tool's own parameter schema (types,
enums, patterns, lengths), so whenever the model calls a tool the arguments are valid by
construction. `tool_choice` narrows the choice: "required" drops the reply, a named
function leaves only that tool, "none" offers no tools at all. The tools are also listed
in the system prompt (names, argument names and descriptions; the grammar carries the
schemas), and the history is rewritten into that same JSON form, since the template
cannot show tool calls or tool results otherwise.

`ChoiceDecoder` turns the model's streamed JSON back into OpenAI deltas: a reply's text
streams as it is generated (the JSON string decoded incrementally), a tool call is sent
whole once its object is complete.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

GrammarOf = Callable[[str], str]
"""JSON Schema (as a JSON string) → GBNF grammar; raises on a schema it cannot convert."""

REPLY = "reply"
DESCRIPTION_CHARS = 240
"""Each tool's description in the prompt is cut here: prompt reading is the slow part of
a small CPU model, and the grammar, not the prose, makes the arguments right."""


class ToolRequestError(ValueError):
    """The request's tools or tool_choice cannot be served (a 400 for the client)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolPlan:
    tool_names: tuple[str, ...]
    allow_reply: bool
    grammar: str
    loose: tuple[str, ...] = ()
    """Tools whose parameter schema the grammar could not express: their arguments are
    only required to be a JSON object (the tool validates them itself)."""


@dataclass
class _Cache:
    size: int = 64
    items: OrderedDict[str, ToolPlan] = field(default_factory=OrderedDict)

    def get(self, key: str) -> ToolPlan | None:
        plan = self.items.get(key)
        if plan is not None:
            self.items.move_to_end(key)
        return plan

    def put(self, key: str, plan: ToolPlan) -> None:
        self.items[key] = plan
        while len(self.items) > self.size:
            self.items.popitem(last=False)


_plans = _Cache()
"""An agent sends the same tools on every turn: their grammar is built once."""


# ------------------------------------------------------------------------ request


def _functions(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise ToolRequestError("tools must be a list", "tools")
    out: list[dict[str, Any]] = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ToolRequestError(f"tools[{i}] is not a function tool with a name", f"tools[{i}]")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ToolRequestError(f"tools[{i}].function.parameters must be an object", f"tools[{i}]")
        out.append(fn)
    return out


def _chosen(fns: list[dict[str, Any]], tool_choice: object) -> tuple[list[dict[str, Any]], bool]:
    """The tools the model may call and whether it may reply instead."""
    if tool_choice in (None, "auto"):
        return fns, True
    if tool_choice == "required":
        return fns, False
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") if isinstance(tool_choice.get("function"), dict) else None
        match = [f for f in fns if f["name"] == name]
        if not match:
            raise ToolRequestError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return match, False
    raise ToolRequestError("tool_choice must be 'none', 'auto', 'required' or a function", "tool_choice")


def plan_tools(fns: list[dict[str, Any]], allow_reply: bool, grammar_of: GrammarOf) -> ToolPlan:
    key = json.dumps([fns, allow_reply], sort_keys=True, default=str)
    cached = _plans.get(key)
    if cached is not None:
        return cached
    options: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    loose: list[str] = []
    if allow_reply:
        # an empty reply would be no turn at all (the caller hears nothing), which a small
        # sampled model otherwise produces now and then
        options.append({"type": "object", "properties": {"action": {"const": REPLY},
                                                         "text": {"type": "string", "minLength": 1}},
                        "required": ["action", "text"], "additionalProperties": False})
    for i, fn in enumerate(fns):
        params, own_defs = _hoist_defs(_closed(fn.get("parameters") or {"type": "object", "properties": {}}), f"t{i}_")
        try:  # each tool alone first: one unsupported schema must not lose every tool's grammar
            grammar_of(json.dumps({**params, "$defs": own_defs} if own_defs else params))
        except Exception as e:
            log.warning("tool %s: its parameters cannot be expressed as a grammar (%s); "
                        "its arguments are only constrained to be a JSON object", fn["name"], str(e)[:200])
            params, own_defs = {"type": "object"}, {}
            loose.append(fn["name"])
        defs.update(own_defs)
        options.append({"type": "object", "properties": {"action": {"const": fn["name"]}, "arguments": params},
                        "required": ["action", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = {"anyOf": options} if len(options) > 1 else options[0]
    if defs:
        schema["$defs"] = defs
    plan = ToolPlan(tuple(f["name"] for f in fns), allow_reply, grammar_of(json.dumps(schema)), tuple(loose))
    _plans.put(key, plan)
    return plan


def _closed(schema: Any) -> Any:
    """Objects that do not say otherwise get no properties beyond the declared ones: a
    schema allows extra keys by default, and a small model fills them with noise."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if isinstance(out.get("properties"), dict) and not {"additionalProperties", "patternProperties",
                                                         "unevaluatedProperties"} & out.keys():
        out["additionalProperties"] = False
    return out


def _hoist_defs(params: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tool's `$defs`/`definitions`, renamed so that every tool's can live at the root of
    the one combined schema, and its local `$ref`s rewritten to match."""
    params = copy.deepcopy(params)
    defs: dict[str, Any] = {}
    renames: dict[str, str] = {}
    for key in ("$defs", "definitions"):
        found = params.pop(key, None)
        if isinstance(found, dict):
            for name, sub in found.items():
                renames[f"#/{key}/{name}"] = f"#/$defs/{prefix}{name}"
                defs[f"{prefix}{name}"] = sub

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str):
                for old, new in renames.items():
                    if ref == old or ref.startswith(old + "/"):
                        out["$ref"] = new + ref[len(old):]
                        break
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return rewrite(params), {k: rewrite(v) for k, v in defs.items()}


def tools_prompt(fns: Sequence[Mapping[str, Any]]) -> str:
    """The same text whatever `tool_choice` says (only the grammar narrows the choice), so
    a conversation's system prompt never changes and llama.cpp reads it only once."""
    lines = ["", "", "TOOLS", "Every answer you give is one JSON object.",
             'To speak to the user: {"action": "reply", "text": "<your words>"}',
             'To use a tool: {"action": "<tool name>", "arguments": {<its arguments>}}',
             "Use a tool when the conversation calls for it; once its result arrives, reply to the user.",
             "Tools:"]
    for fn in fns:
        props = (fn.get("parameters") or {}).get("properties")
        args = ", ".join(props) if isinstance(props, dict) else ""
        desc = " ".join(str(fn.get("description") or "").split())
        if len(desc) > DESCRIPTION_CHARS:
            desc = desc[:DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "..."
        lines.append(f"- {fn['name']}({args}): {desc}".rstrip(": "))
    return "\n".join(lines)


def _text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return str(content)


def _call_json(call: Mapping[str, Any]) -> str:
    fn = call.get("function") or {}
    raw = fn.get("arguments")
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    except ValueError:
        args = raw
    return json.dumps({"action": fn.get("name", ""), "arguments": args}, ensure_ascii=False)


def rewrite_messages(messages: Sequence[Any], *, constrained: bool) -> list[dict[str, Any]]:
    """Messages a plain chat template can render: text content only; `developer` as
    `system`; with `constrained`, assistant tool calls and replies in the model's JSON
    form and tool results as `tool` turns naming their tool."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ToolRequestError(f"messages[{i}] must be an object with a role", f"messages[{i}]")
        role = "system" if m["role"] == "developer" else m["role"]
        text = _text(m.get("content"))
        calls = m.get("tool_calls") if role == "assistant" else None
        if constrained and role == "assistant":
            parts = [json.dumps({"action": REPLY, "text": text}, ensure_ascii=False)] if text else []
            for c in calls or []:
                if isinstance(c, dict):
                    names[str(c.get("id"))] = str((c.get("function") or {}).get("name", ""))
                    parts.append(_call_json(c))
            text = "\n".join(parts)
        elif calls:  # a model without tools in its template still sees what was done
            text = "\n".join([text] * bool(text) + [_call_json(c) for c in calls if isinstance(c, dict)])
        if role == "tool":
            name = names.get(str(m.get("tool_call_id")), "")
            text = f"{name} answered: {text}" if name else text
        out.append({"role": role, "content": text})
    return out


def with_system_suffix(messages: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    for m in messages:
        if m["role"] == "system":
            m["content"] = m["content"] + suffix
            return messages
    return [{"role": "system", "content": suffix.strip()}, *messages]


@dataclass(frozen=True)
class PreparedChat:
    body: dict[str, Any]
    """What the model server's chat endpoint is sent."""
    plan: ToolPlan | None
    """Set when the answer is constrained JSON to decode with `ChoiceDecoder`."""


PASSED_THROUGH = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
                  "logit_bias", "n_probs", "top_k", "min_p", "repeat_penalty", "response_format")


def prepare_chat(body: Mapping[str, Any], *, mode: str, grammar_of: GrammarOf, max_tokens: int,
                 repeat_penalty: float = 1.0) -> PreparedChat:
    """An OpenAI chat request → the request for llama.cpp (always streamed internally).
    `max_tokens`: the server's ceiling; `repeat_penalty`: its default."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ToolRequestError("messages must be a non-empty list", "messages")
    out: dict[str, Any] = {k: body[k] for k in PASSED_THROUGH if k in body}
    out.setdefault("repeat_penalty", repeat_penalty)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ToolRequestError("max_tokens must be a positive integer", "max_tokens")
    # llama.cpp reads max_tokens; OpenAI's newer max_completion_tokens is accepted too
    out["max_tokens"] = min(limit, max_tokens) if limit is not None else max_tokens
    out["stream"] = True
    out["stream_options"] = {"include_usage": True}
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if mode == "native" or not tools or choice == "none":
        if tools and mode == "native":
            out["tools"] = tools
            if choice is not None:
                out["tool_choice"] = choice
        out["messages"] = rewrite_messages(messages, constrained=False)
        return PreparedChat(out, None)
    fns = _functions(tools)
    chosen, allow_reply = _chosen(fns, choice)
    plan = plan_tools(chosen, allow_reply, grammar_of)
    out.pop("response_format", None)  # the grammar is the answer's format
    out["grammar"] = plan.grammar
    out["messages"] = with_system_suffix(rewrite_messages(messages, constrained=True), tools_prompt(fns))
    return PreparedChat(out, plan)


# ----------------------------------------------------------------------- response

_HEAD = re.compile(r'\s*\{\s*"action"\s*:\s*"((?:[^"\\]|\\.)*)"\s*')
_TEXT_KEY = re.compile(r'\s*,\s*"text"\s*:\s*"')  # the space before the comma may come in a later piece


@dataclass
class Decoded:
    content: str = ""
    tool_call: tuple[str, str, str] | None = None
    """(call id, tool name, arguments JSON), once complete."""


class ChoiceDecoder:
    """Feeds on the model's streamed JSON; yields reply text as it comes, the tool call
    at the end. Malformed output (impossible under the grammar, but a model cut off by
    `max_tokens` stops mid-object) yields what was decodable and nothing invented."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._buf = ""
        self._action: str | None = None
        self._in_text = False
        self._text_done = False
        self._pos = 0  # how far into _buf the reply's string has been decoded
        self.called: str | None = None

    @property
    def action(self) -> str | None:
        return self._action

    def feed(self, piece: str) -> str:
        """Returns reply text decoded from this piece (may be "")."""
        self._buf += piece
        if self._action is None:
            m = _HEAD.match(self._buf)
            if m is None:
                return ""
            try:
                self._action = json.loads(f'"{m.group(1)}"')
            except ValueError:
                self._action = m.group(1)
            self._pos = m.end()
        if self._action != REPLY or self._text_done:
            return ""
        if not self._in_text:
            m = _TEXT_KEY.match(self._buf, self._pos)
            if m is None:
                return ""
            self._in_text = True
            self._pos = m.end()
        return self._decode_string()

    def _decode_string(self) -> str:
        out: list[str] = []
        buf, i = self._buf, self._pos
        while i < len(buf):
            ch = buf[i]
            if ch == '"':
                self._text_done = True
                i += 1
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(buf):
                break  # an escape split across pieces: wait for the rest
            if buf[i + 1] != "u":
                esc = buf[i : i + 2]
                try:
                    out.append(json.loads(f'"{esc}"'))
                except ValueError:
                    out.append(esc[1])
                i += 2
                continue
            end = i + 6
            if end > len(buf):
                break
            code = int(buf[i + 2 : end], 16) if re.fullmatch(r"[0-9a-fA-F]{4}", buf[i + 2 : end]) else 0xFFFD
            if 0xD800 <= code < 0xDC00:  # a surrogate pair: needs the low half too
                if end + 6 > len(buf):
                    break
                low = buf[end : end + 6]
                if re.fullmatch(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", low):
                    out.append(json.loads(f'"{buf[i:end]}{low}"'))
                    i = end + 6
                    continue
                code = 0xFFFD
            out.append(chr(code))
            i = end
        self._pos = i
        return "".join(out)

    def finish(self) -> Decoded:
        """At the end of the stream: the tool call, if the model made a complete one."""
        if self._action is None or self._action == REPLY:
            return Decoded()
        try:
            doc = json.loads(self._buf)
        except ValueError:
            log.warning("the model's %s call was cut off before its arguments were complete", self._action)
            return Decoded()
        args = doc.get("arguments", {}) if isinstance(doc, dict) else {}
        self.called = self._action
        return Decoded(tool_call=(f"call_{secrets.token_hex(8)}", self._action, json.dumps(args, ensure_ascii=False)))
