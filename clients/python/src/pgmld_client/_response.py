"""Shapes pgml.transform's answers as PostgresML's SDK (and OpenAI) responses.

pgml.transform is called with ``"return_usage": true``, so it answers
``{"outputs": ["text", ...], "finish_reasons": ["stop" | "length", ...], "usage": {...}}``.
A pgml.transform_stream row is ``["piece"]``; its last row is
``{"finish_reason": ..., "usage": {...}}``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, Optional, Tuple, Union

from ._request import Call


class UnexpectedAnswer(ValueError):
    """pgml.transform answered in a shape this client does not know (an older pgmld, or
    a server that is not pgmld)."""


def _usage(value: Any) -> Dict[str, int]:
    try:
        prompt, completion = int(value["prompt_tokens"]), int(value["completion_tokens"])
    except (KeyError, TypeError, ValueError) as e:
        raise UnexpectedAnswer(f"pgml.transform answered without token counts: {value!r}") from e
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _header(call: Call, object_name: str, response_id: str, created: int) -> Dict[str, Any]:
    return {
        "id": response_id,
        "object": object_name,
        "created": created,
        "model": call.model_name,
        "system_fingerprint": call.system_fingerprint,
    }


def new_id() -> str:
    """A fresh response id (a UUID, as the SDK's)."""
    return str(uuid.uuid4())


def completion(call: Call, answer: Any, response_id: Optional[str] = None, created: Optional[int] = None) -> Dict[str, Any]:
    """The ``chat.completion`` dict for a pgml.transform answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
        raise UnexpectedAnswer(f"pgml.transform answered {answer!r}, not {{outputs, finish_reasons, usage}}")
    reasons = answer.get("finish_reasons") or []
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reasons[i] if i < len(reasons) else None,
        }
        for i, text in enumerate(answer["outputs"])
    ]
    out = _header(call, "chat.completion", response_id or new_id(), created or int(time.time()))
    out["choices"] = choices
    out["usage"] = _usage(answer.get("usage"))
    return out


Row = Union[Tuple[str, str], Tuple[str, str, Dict[str, int]]]


def stream_row(row: Any) -> Row:
    """``("piece", text)`` or ``("done", finish_reason, usage)`` for one stream row."""
    if isinstance(row, list) and row and isinstance(row[0], str):
        return ("piece", row[0])
    if isinstance(row, dict) and isinstance(row.get("finish_reason"), str):
        return ("done", row["finish_reason"], _usage(row.get("usage")))
    raise UnexpectedAnswer(f"pgml.transform_stream sent {row!r}")


def chunk(call: Call, response_id: str, created: int, piece: str) -> Dict[str, Any]:
    """A ``chat.completion.chunk`` with one piece of text, as the SDK streams them."""
    out = _header(call, "chat.completion.chunk", response_id, created)
    out["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]
    return out


def last_chunk(call: Call, response_id: str, created: int, finish_reason: str, usage: Dict[str, int]) -> Dict[str, Any]:
    """The closing chunk: an empty delta with the finish reason (as OpenAI ends a
    stream) and the whole stream's token counts under ``usage``."""
    out = _header(call, "chat.completion.chunk", response_id, created)
    out["choices"] = [{"index": 0, "delta": {}, "finish_reason": finish_reason}]
    out["usage"] = usage
    return out
