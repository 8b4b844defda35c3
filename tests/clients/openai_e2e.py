"""End to end: pgmld's OpenAI-compatible endpoint through the official `openai` package,
and the repository's Python client (clients/python) through psycopg, on a real model.

    python3 openai_e2e.py BASE_URL API_KEY DATABASE_URL MODEL [LISTED_MODEL ...]

BASE_URL is the endpoint (http://host:port/v1), DATABASE_URL pgmld's Postgres URL, MODEL
a chat model pgml.transform can load (the SmolLM2 GGUF file). Each LISTED_MODEL must be
in GET /v1/models. Prints "openai e2e ok" when every check passed.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import openai
import pgml
import pgmld_client
from pgmld_client import PgmlError

# `pgml` must be the in-repo client's alias: PostgresML's SDK, which .deps/python also
# holds under that name (tests/clients/pgml_sdk.py), comes after it on PYTHONPATH.
if pgml.OpenSourceAI is not pgmld_client.OpenSourceAI:
    raise AssertionError(f"import pgml gave {pgml.__file__}, not the clients/python alias")

BASE_URL, API_KEY, DATABASE_URL, MODEL = sys.argv[1:5]
LISTED = sys.argv[5:]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MAX_TOKENS = 40


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def counts(usage):
    """The three counts of an openai usage object."""
    return {k: getattr(usage, k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def check_usage(usage, what):
    check(usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, f"{what}: counts > 0: {usage}")
    check(usage["completion_tokens"] <= MAX_TOKENS, f"{what}: at most max_tokens: {usage}")
    check(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], f"{what}: total: {usage}")


def raw_request(path, key=None, body=None):
    """(status, JSON body) of a request sent without the openai package."""
    req = urllib.request.Request(BASE_URL + path, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def openai_endpoint():
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
    text = answer.choices[0].message.content
    print(f"openai answer: {text!r} usage={answer.usage}")
    check("Paris" in text, f"the answer mentions Paris: {text!r}")
    check(answer.object == "chat.completion" and answer.id.startswith("chatcmpl-"), f"shape: {answer}")
    check(answer.choices[0].message.role == "assistant", "role")
    check(answer.choices[0].finish_reason in ("stop", "length"), f"finish_reason {answer.choices[0].finish_reason}")
    check(answer.model == MODEL, f"model echoed: {answer.model}")
    usage = counts(answer.usage)
    check_usage(usage, "openai usage")

    # Streaming: chunks concatenate to the same (greedy) text, with the same counts.
    pieces, finish, stream_usage, roles = [], None, None, []
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
        if chunk.usage is not None:
            stream_usage = counts(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    print(f"openai stream: {len(pieces)} pieces, finish={finish}, usage={stream_usage}")
    check(len(pieces) > 1, "the answer arrives in several pieces")
    check(streamed == text, f"stream {streamed!r} == answer {text!r}")
    check(finish == answer.choices[0].finish_reason, "same finish_reason")
    check(stream_usage == usage, f"stream usage {stream_usage} == {usage}")
    check(roles == ["assistant"], f"role sent once: {roles}")

    # Authentication: the openai package's own exception, and OpenAI's error shape.
    try:
        openai.OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0).chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=2
        )
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"401: {e}")
    status, body = raw_request("/chat/completions", None, {"model": MODEL, "messages": QUESTION})
    check(status == 401 and "API key" in body["error"]["message"], f"no key: {status} {body}")
    status, body = raw_request("/models")
    check(status == 401, f"models without key: {status}")

    # Bad input: 400 with the field, and pgmld's own message for what only it can check.
    try:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=3)
        raise AssertionError("temperature 3 was accepted")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "temperature", f"param: {e.body}")
    try:
        client.chat.completions.create(model="/no/such/model.gguf", messages=QUESTION, max_tokens=2)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        check("/no/such/model.gguf" in e.body.get("message", ""), f"pgmld's message names the model: {e.body}")
        check(e.body.get("code") == "model_not_found", f"code: {e.body}")
    try:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, stop=["a"] * 5)
        raise AssertionError("5 stop sequences were accepted")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "stop", f"stop param: {e.body}")

    listed = [m.id for m in client.models.list()]
    print(f"models: {listed}")
    for name in LISTED:
        check(name in listed, f"{name} listed in {listed}")
        check(client.models.retrieve(name).id == name, f"retrieve {name}")
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("retrieving an unknown model succeeded")
    except openai.NotFoundError:
        pass
    return text, usage


def python_client(expected_text, expected_usage):
    client = pgml.OpenSourceAI(DATABASE_URL)
    answer = client.chat_completions_create(MODEL, QUESTION, max_tokens=MAX_TOKENS, temperature=0)
    print(f"pgml answer: {json.dumps(answer)}")
    check(set(answer) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}, f"keys {set(answer)}")
    check(answer["object"] == "chat.completion" and answer["model"] == MODEL, "shape")
    choice = answer["choices"][0]
    check(choice["index"] == 0 and choice["message"]["role"] == "assistant", f"choice {choice}")
    check(choice["message"]["content"] == expected_text, "same greedy answer as the endpoint")
    check(answer["usage"] == expected_usage, f"same counts: {answer['usage']} vs {expected_usage}")

    chunks = list(client.chat_completions_create_stream(MODEL, QUESTION, max_tokens=MAX_TOKENS, temperature=0))
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    check(all(c["object"] == "chat.completion.chunk" for c in chunks), "chunk objects")
    check(len({c["id"] for c in chunks}) == 1, "one id per stream")
    check("".join(pieces) == expected_text, f"stream {''.join(pieces)!r} == {expected_text!r}")
    check(chunks[-1]["usage"] == expected_usage, f"stream usage {chunks[-1]['usage']}")
    check(chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"], "stream finish_reason")

    # The guide's call form: options and settings in a model dict.
    guide = client.chat_completions_create(
        {"model": MODEL, "load_in_8bit": "false", "temperature": 0, "repetition_penalty": 1.0}, QUESTION, max_tokens=8
    )
    check_usage(guide["usage"], "guide form")

    try:
        client.chat_completions_create(MODEL, [{"role": "tool", "content": "x"}], max_tokens=2)
        raise AssertionError("an unknown role was accepted")
    except PgmlError as e:
        check(e.sqlstate == "22023" and "tool" in e.message, f"SQLSTATE and message: {e!r}")
    try:
        client.chat_completions_create_stream(MODEL, QUESTION, max_tokens=0)
        raise AssertionError("max_tokens 0 was accepted")
    except PgmlError as e:
        check(e.sqlstate == "22023", f"stream error at the call: {e!r}")

    # Closing a stream early closes its connection; the next call is served.
    stream = client.chat_completions_create_stream(MODEL, QUESTION, max_tokens=MAX_TOKENS, temperature=0)
    next(stream)
    stream.close()
    check(list(stream) == [], "a closed stream yields nothing")

    async def run_async():
        answer = await client.chat_completions_create_async(MODEL, QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        check(answer["choices"][0]["message"]["content"] == expected_text, "async answer")
        stream = await client.chat_completions_create_stream_async(MODEL, QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        pieces = [c["choices"][0]["delta"].get("content", "") async for c in stream]
        check("".join(pieces) == expected_text, "async stream")

    asyncio.run(run_async())


text, usage = openai_endpoint()
python_client(text, usage)
print("openai e2e ok")
