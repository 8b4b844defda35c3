"""A model tuned by pgml.tune, through the repository's Python client (clients/python).

    python3 chat_tuned.py DATABASE_URL MODEL SYSTEM MAX_TOKENS CASES_JSON

CASES_JSON is a list of [question, expected answer] pairs: the answers the same model gave
through SQL (greedy, MAX_TOKENS new tokens). ``temperature=0`` asks the client for greedy
decoding too (its default, as PostgresML's SDK, samples at 0.8). For each question the client's
``chat_completions_create`` and ``chat_completions_create_stream`` must give exactly that
answer, with real token counts. Prints "chat tuned ok" when every check passed.
"""

import json
import sys

from pgmld_client import OpenSourceAI

DATABASE_URL, MODEL, SYSTEM, MAX_TOKENS, CASES = sys.argv[1:6]
MAX_TOKENS = int(MAX_TOKENS)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    client = OpenSourceAI(DATABASE_URL)
    for question, expected in json.loads(CASES):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        reply = client.chat_completions_create(MODEL, messages, max_tokens=MAX_TOKENS, temperature=0)
        content = reply["choices"][0]["message"]["content"]
        check(content == expected, f"{question!r}: client {content!r}, SQL {expected!r}")
        check(reply["model"] == MODEL, f"model echoed: {reply['model']!r}")
        usage = reply["usage"]
        check(0 < usage["completion_tokens"] <= MAX_TOKENS and usage["prompt_tokens"] > len(SYSTEM) // 8,
              f"real token counts: {usage}")
        pieces, last = [], None
        for chunk in client.chat_completions_create_stream(MODEL, messages, max_tokens=MAX_TOKENS, temperature=0):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                pieces.append(delta)
            last = chunk
        check("".join(pieces) == expected, f"{question!r}: stream {''.join(pieces)!r}, SQL {expected!r}")
        check(last["choices"][0]["finish_reason"] in ("stop", "length"), f"last chunk: {last}")
        print(f"{question!r} -> {content!r}")
    print("chat tuned ok")


if __name__ == "__main__":
    main()
