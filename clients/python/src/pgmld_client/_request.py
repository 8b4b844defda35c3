"""Turns an ``OpenSourceAI`` call into the arguments of ``pgml.transform``.

As PostgresML's SDK does: the task object is ``{"task": "conversational", "model": ...}``
plus the model options (``load_in_8bit``, ``token``, ``revision``, ``adapter``, ...), the
inputs are the messages as ``jsonb[]``, and ``args`` carries generation settings with the
SDK's defaults (``max_new_tokens`` 1000, ``temperature`` 0.8, sampling on,
``num_return_sequences`` n). Two differences, so the guide's calls work against pgmld:

- generation settings found in the model dict or in ``**kwargs`` (the guide passes
  ``temperature`` and ``repetition_penalty`` in the model dict) go to ``args``, where
  pgml.transform reads them, instead of the task object;
- ``temperature=0`` means greedy decoding (``do_sample`` false), as in OpenAI's API.

``return_usage`` is always set, so answers carry real token counts and finish reasons.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

#: New tokens when the call names no limit (PostgresML's SDK default).
DEFAULT_MAX_TOKENS = 1000
#: Sampling temperature when the call names none (PostgresML's SDK default).
DEFAULT_TEMPERATURE = 0.8

#: Keys that are generation settings (``args`` of pgml.transform), wherever given.
GENERATION_KEYS = frozenset(
    {
        "max_new_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "do_sample",
        "seed",
        "stop",
        "num_return_sequences",
        "n",
        "eos_token",
        "chat_template",
    }
)

#: Task options that are booleans; the guide writes ``"load_in_8bit": "true"``.
_BOOLEAN_TASK_KEYS = ("load_in_8bit", "trust_remote_code")

#: Names pgml.transform takes for settings that callers also spell otherwise.
_RENAMED = {"max_tokens": "max_new_tokens", "n": "num_return_sequences"}

Model = Union[str, Mapping[str, Any]]


@dataclass
class Call:
    """The three arguments of one pgml.transform call, and what the response reports."""

    #: The model as the response names it.
    model_name: str
    #: The task object (jsonb).
    task: Dict[str, Any]
    #: The messages (jsonb[]).
    inputs: List[Dict[str, Any]]
    #: Generation settings (jsonb).
    args: Dict[str, Any]

    @property
    def system_fingerprint(self) -> str:
        """A UUID from the MD5 of the model options and settings, as the SDK derives it:
        the same configuration always has the same fingerprint."""
        settings = json.dumps({"task": self.task, "args": self.args}, sort_keys=True, separators=(",", ":"))
        return str(uuid.UUID(bytes=hashlib.md5(settings.encode()).digest()))


def _boolean(key: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _split_model(model: Model) -> "tuple[str, Dict[str, Any]]":
    if isinstance(model, str):
        name, options = model, {}
    elif isinstance(model, Mapping):
        options = dict(model)
        name = options.pop("model", None)
        if not isinstance(name, str):
            raise ValueError("`model` is a required key in the model object, and must be a string")
    else:
        raise TypeError(f"model must be a string or a dict, not {type(model).__name__}")
    if not name.strip():
        raise ValueError("model must not be empty")
    return name.strip(), options


def _messages(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, not {type(message).__name__}")
        out.append(dict(message))
    return out


def build_call(
    model: Model,
    messages: Sequence[Mapping[str, Any]],
    max_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
    n: Optional[int] = None,
    chat_template: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Call:
    """The pgml.transform arguments for a chat completion. Explicit parameters win over
    the same settings in the model dict or ``extra`` (the call's ``**kwargs``)."""
    name, options = _split_model(model)
    options.update(extra or {})
    task: Dict[str, Any] = {"task": "conversational", "model": name}
    args: Dict[str, Any] = {}
    for key, value in options.items():
        if key in GENERATION_KEYS:
            args[_RENAMED.get(key, key)] = value
        elif key in ("task", "model"):
            raise ValueError(f"{key!r} cannot be overridden: this client runs conversational tasks")
        else:
            task[key] = _boolean(key, value) if key in _BOOLEAN_TASK_KEYS else value
    if max_tokens is not None:
        args["max_new_tokens"] = max_tokens
    args.setdefault("max_new_tokens", DEFAULT_MAX_TOKENS)
    if temperature is not None:
        args["temperature"] = temperature
    args.setdefault("temperature", DEFAULT_TEMPERATURE)
    if "do_sample" not in args:
        t = args["temperature"]
        args["do_sample"] = not isinstance(t, (int, float)) or t > 0
    if n is not None:
        args["num_return_sequences"] = n
    args.setdefault("num_return_sequences", 1)
    if chat_template is not None:
        args["chat_template"] = chat_template
    args["return_usage"] = True
    return Call(model_name=name, task=task, inputs=_messages(messages), args=args)
