"""PostgresML's own Python SDK (`pgml` from PyPI, pinned in requirements.txt) through pgmld:
`OpenSourceAI.chat_completions_create` as the fine-tuning guide writes it, its stream,
and the async variants, on a real model.

    python3 pgml_sdk.py DATABASE_URL MODEL MAX_TOKENS

DATABASE_URL is pgmld's Postgres URL (a role that may read server files: MODEL is a
path on pgmld's machine), MODEL a chat model pgml.transform can load (the SmolLM2 GGUF
file). The SDK (1.1.1) sends, with sqlx's extended protocol and binary parameters:

    SELECT pgml.transform(task => $1, inputs => $2, args => $3)        -- jsonb, jsonb[], jsonb
    BEGIN; DECLARE c CURSOR FOR SELECT pgml.transform_stream(task => $1, inputs => $2, args => $3);
    FETCH 1 FROM c  -- until it returns no row; then COMMIT

with the model dict (plus "task": "conversational") as the task and {"max_tokens",
"temperature"} as args. Its answers are checked against the same call made directly
with psycopg. Prints "pgml sdk ok" when every check passed.
"""

import asyncio
import importlib.metadata
import json
import os
import sys
import time
import uuid

import pgml
import psycopg

DATABASE_URL, MODEL, MAX_TOKENS = sys.argv[1:4]
MAX_TOKENS = int(MAX_TOKENS)

# The guide's model dict, with the model on this machine instead of the Hub repo.
GUIDE_MODEL = {
    "model": MODEL,
    "token": "TOKEN",
    "load_in_8bit": "true",
    "temperature": 0.1,
    "repetition_penalty": 1.5,
}
GUIDE_MESSAGES = [
    {
        "role": "system",
        "content": "What is the sentiment of this news? Please choose an answer from {strong negative/moderately negative/mildly negative/neutral/mildly positive/moderately positive/strong positive}.",
    },
    {
        "role": "user",
        "content": "Starbucks says the workers violated safety policies while workers said they'd never heard of the policy before and are alleging retaliation.",
    },
]
FRANCE = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_uuid(value, what):
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise AssertionError(f"{what} is a UUID: {value!r}")


def direct(task, messages, args):
    """The same pgml.transform call made with psycopg (text protocol): pgmld's own answer."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pgml.transform(task => %s::jsonb, inputs => %s::jsonb[], args => %s::jsonb)",
            (json.dumps(task), [json.dumps(m) for m in messages], json.dumps(args)),
        ).fetchone()
    answer = row[0]
    check(isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], str), f"direct answer {answer!r}")
    return answer[0]


def check_completion(answer, model, what):
    """OpenAI's chat.completion shape, as the SDK builds it from pgml.transform's array."""
    print(f"{what}: {json.dumps(answer)}")
    check(isinstance(answer, dict), f"{what}: a dict, not {type(answer)}")
    keys = {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}
    check(set(answer) == keys, f"{what}: keys {sorted(answer)}")
    check(answer["object"] == "chat.completion", f"{what}: object {answer['object']!r}")
    check(answer["model"] == model, f"{what}: model {answer['model']!r}")
    check_uuid(answer["id"], f"{what}: id")
    check_uuid(answer["system_fingerprint"], f"{what}: system_fingerprint")
    check(isinstance(answer["created"], int) and abs(answer["created"] - time.time()) < 600, f"{what}: created")
    choices = answer["choices"]
    check(isinstance(choices, list) and len(choices) == 1, f"{what}: one choice: {choices}")
    choice = choices[0]
    check(choice["index"] == 0 and choice["message"]["role"] == "assistant", f"{what}: choice {choice}")
    content = choice["message"]["content"]
    check(isinstance(content, str) and content.strip(), f"{what}: non-empty content {content!r}")
    # The SDK fills usage with zeros itself (PostgresML's pgml.transform returns no
    # counts); the numbers are still there and add up.
    usage = answer["usage"]
    check(set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}, f"{what}: usage {usage}")
    check(all(isinstance(v, int) and v >= 0 for v in usage.values()), f"{what}: usage numbers {usage}")
    check(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], f"{what}: usage total {usage}")
    return content


def check_chunks(chunks, model, what):
    """chat.completion.chunk dicts, one per FETCH of pgml.transform_stream; their text."""
    check(len(chunks) >= 2, f"{what}: streamed in pieces, got {len(chunks)} chunk(s): {chunks}")
    check(len(chunks) <= MAX_TOKENS, f"{what}: at most one chunk per token: {len(chunks)}")
    keys = {"id", "object", "created", "model", "system_fingerprint", "choices"}
    for c in chunks:
        check(set(c) == keys, f"{what}: chunk keys {sorted(c)}")
        check(c["object"] == "chat.completion.chunk", f"{what}: object {c['object']!r}")
        check(c["model"] == model, f"{what}: model {c['model']!r}")
        check(isinstance(c["created"], int), f"{what}: created {c['created']!r}")
        check(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0, f"{what}: choices {c['choices']}")
        delta = c["choices"][0]["delta"]
        check(delta["role"] == "assistant" and isinstance(delta["content"], str), f"{what}: delta {delta}")
    check(len({c["id"] for c in chunks}) == 1, f"{what}: one id per stream")
    check_uuid(chunks[0]["id"], f"{what}: id")
    check(len({c["system_fingerprint"] for c in chunks}) == 1, f"{what}: one fingerprint per stream")
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    check(text.strip(), f"{what}: non-empty text")
    print(f"{what}: {len(chunks)} chunks -> {text!r}")
    return text


def expect_error(what, needle, call):
    """`call` fails with an error whose text holds pgmld's message (`needle`)."""
    try:
        call()
    except Exception as e:
        check(needle in str(e), f"{what}: {needle!r} in {str(e)!r}")
        print(f"{what}: {str(e).splitlines()[0]}")
        return
    raise AssertionError(f"{what}: succeeded")


def main():
    # PostgresML's compiled SDK, not the in-repo client's `pgml` alias.
    version = importlib.metadata.version("pgml")
    check(version == "1.1.1", f"pgml {version} installed, requirements.txt pins 1.1.1")
    check(hasattr(pgml, "Collection") and hasattr(pgml.OpenSourceAI, "chat_completions_create_stream_async"),
          f"PostgresML's SDK: {pgml.__file__}")
    names = [n for n in dir(pgml.OpenSourceAI) if n.startswith("chat_completions")]
    print(f"pgml {version} ({pgml.__file__}): OpenSourceAI.{', '.join(names)}")
    client = pgml.OpenSourceAI(DATABASE_URL)

    # 1. The guide's call, as written there (model dict with token, load_in_8bit as a
    #    string, temperature and repetition_penalty; system and user messages), with a
    #    small max_tokens so the CPU run is short.
    started = time.time()
    results = client.chat_completions_create(GUIDE_MODEL, GUIDE_MESSAGES, max_tokens=MAX_TOKENS)
    content = check_completion(results, MODEL, f"guide call ({time.time() - started:.1f}s, with the int8 load)")
    # Greedy (the SDK sends no do_sample): exactly what pgmld answers the same call in SQL.
    task = {k: v for k, v in GUIDE_MODEL.items() if k != "temperature"}
    task.update(task="conversational", load_in_8bit=True)
    expected = direct(task, GUIDE_MESSAGES, {"max_new_tokens": MAX_TOKENS, "repetition_penalty": 1.5})
    check(content == expected, f"guide call: SDK {content!r}, SQL {expected!r}")

    # 2. The stream of the same call: a cursor over pgml.transform_stream, FETCH 1 at a time.
    chunks = list(client.chat_completions_create_stream(GUIDE_MODEL, GUIDE_MESSAGES, max_tokens=MAX_TOKENS))
    check(check_chunks(chunks, MODEL, "guide stream") == content, "the stream gives the same greedy text")

    # 3. A model without options (another cache entry): a question the model knows.
    plain = {"model": MODEL}
    paris = check_completion(client.chat_completions_create(plain, FRANCE, max_tokens=MAX_TOKENS), MODEL, "france")
    check("Paris" in paris, f"the untuned model knows its capitals: {paris!r}")
    check(paris == direct({"task": "conversational", "model": MODEL}, FRANCE, {"max_tokens": MAX_TOKENS}),
          "france: SDK and SQL agree")
    stream = client.chat_completions_create_stream(plain, FRANCE, max_tokens=MAX_TOKENS)
    check(check_chunks(list(stream), MODEL, "france stream") == paris, "france stream == create")
    # A second stream on the pool's connection: the cursor "c" is declared again.
    check(check_chunks(list(client.chat_completions_create_stream(plain, FRANCE, max_tokens=MAX_TOKENS)), MODEL,
                       "france stream again") == paris, "second stream == create")

    # 4. The async variants, one after the other and side by side (two sessions at once).
    async def run_async():
        answer = await client.chat_completions_create_async(plain, FRANCE, max_tokens=MAX_TOKENS)
        check(check_completion(answer, MODEL, "async") == paris, "async == sync")
        stream = await client.chat_completions_create_stream_async(plain, FRANCE, max_tokens=MAX_TOKENS)
        check(check_chunks([c async for c in stream], MODEL, "async stream") == paris, "async stream == sync")

        async def collect():
            stream = await client.chat_completions_create_stream_async(plain, FRANCE, max_tokens=MAX_TOKENS)
            return [c async for c in stream]

        one, two = await asyncio.gather(
            client.chat_completions_create_async(plain, FRANCE, max_tokens=MAX_TOKENS), collect()
        )
        check(check_completion(one, MODEL, "gathered create") == paris, "gathered create")
        check(check_chunks(two, MODEL, "gathered stream") == paris, "gathered stream")

    asyncio.run(run_async())

    # 5. pgmld's errors reach the caller with their messages, and the pool stays usable.
    expect_error("unknown model", 'model "/nonexistent/model.gguf" not found',
                 lambda: client.chat_completions_create({"model": "/nonexistent/model.gguf"}, FRANCE, max_tokens=4))
    expect_error("max_tokens 0", "max_tokens must be between 1 and 32768, not 0",
                 lambda: client.chat_completions_create(plain, FRANCE, max_tokens=0))
    expect_error("misspelt key", 'unknown task key "repetition_penalt"',
                 lambda: client.chat_completions_create({**GUIDE_MODEL, "repetition_penalt": 1.5}, FRANCE, max_tokens=4))
    expect_error("unknown role", 'inputs[1] has unknown role "robot"',
                 lambda: client.chat_completions_create(plain, [{"role": "robot", "content": "beep"}], max_tokens=4))
    # A stream's error comes with its first FETCH (the DECLARE only plans the call, as in
    # Postgres); the SDK 1.1.1 turns an error while iterating into a Rust panic
    # (pyo3_runtime.PanicException, a BaseException) that still carries pgmld's message.
    stream = client.chat_completions_create_stream({"model": "/nonexistent/model.gguf"}, FRANCE, max_tokens=4)
    try:
        next(iter(stream))
        raise AssertionError("a stream of an unknown model yielded a chunk")
    except (AssertionError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: B036 - PanicException derives from BaseException
        check('model "/nonexistent/model.gguf" not found' in str(e), f"stream error: {str(e)!r}")
        print(f"stream error: {type(e).__name__}: {str(e).splitlines()[0]}")
    del stream
    check(check_chunks(list(client.chat_completions_create_stream(plain, FRANCE, max_tokens=MAX_TOKENS)), MODEL,
                       "stream after errors") == paris, "stream after errors")
    after = client.chat_completions_create(plain, FRANCE, max_tokens=MAX_TOKENS)
    check(check_completion(after, MODEL, "create after errors") == paris, "create after errors")

    # 6. The database URL from PGML_DATABASE_URL, as the SDK documents.
    os.environ["PGML_DATABASE_URL"] = DATABASE_URL
    from_env = pgml.OpenSourceAI().chat_completions_create(plain, FRANCE, max_tokens=MAX_TOKENS)
    check(check_completion(from_env, MODEL, "PGML_DATABASE_URL") == paris, "client from PGML_DATABASE_URL")

    print("pgml sdk ok")


if __name__ == "__main__":
    main()
