"""The conversation rows both sides of bench/chat train on, and how the Hugging Face side turns
them into token ids and labels the way `pgml.tune(task => 'conversation')` does.

Rows: pairs of consecutive turns of `.deps/data/chitchat_dataset/dataset.json` (a turn is one
or more messages of one sender, joined with a space), the first as the user's message and the
second as the assistant's reply, under one fixed system prompt. Pairs do not overlap (turns 0+1,
2+3, ...), conversations in file order, so the same file always gives the same rows."""

import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import write_csv_atomic  # noqa: E402

SYSTEM_PROMPT = "You are a friendly chat partner. Reply briefly and casually."
COLUMNS = ("system", "user", "assistant")


def chitchat_pairs(dataset_json, limit):
    """The first `limit` (system, user, assistant) rows of the chitchat data set; raises if
    the file has fewer."""
    with open(dataset_json) as f:
        conversations = json.load(f)
    rows = []
    for conversation in conversations.values():
        turns = conversation["messages"]
        for i in range(0, len(turns) - 1, 2):
            user = " ".join(m["text"].strip() for m in turns[i]).strip()
            assistant = " ".join(m["text"].strip() for m in turns[i + 1]).strip()
            if user and assistant:
                rows.append((SYSTEM_PROMPT, user, assistant))
                if len(rows) == limit:
                    return rows
    raise ValueError(f"{dataset_json} holds only {len(rows)} user/assistant pairs, {limit} wanted")


def write_csv(rows, path):
    """Writes rows with a header (system,user,assistant), atomically, for psql's \\copy."""
    write_csv_atomic(path, COLUMNS, rows)


def read_csv(path):
    """The rows write_csv wrote, as tuples."""
    with open(path, newline="") as f:
        r = csv.reader(f)
        if tuple(next(r)) != COLUMNS:
            raise ValueError(f"{path}: header is not {','.join(COLUMNS)}")
        return [tuple(row) for row in r]


def messages(row, with_reply=True):
    """The chat messages of one row (the reply left out for a generation prompt)."""
    system, user, assistant = row
    out = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if with_reply:
        out.append({"role": "assistant", "content": assistant})
    return out


def _ids(encoded):
    """apply_chat_template returns a list or, in transformers 5, a BatchEncoding."""
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def encode_example(tokenizer, row, max_seq_length, end_of_turn_id):
    """input_ids and labels of one row as pgml.tune builds them by default: the whole
    conversation rendered with the chat template, the loss only on the assistant's reply and
    its end-of-turn token (labels -100 elsewhere), truncated to max_seq_length tokens."""
    prompt = _ids(tokenizer.apply_chat_template(messages(row, False), add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(messages(row), tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently with and without the reply")
    labels = [-100] * len(prompt) + full[len(prompt) :]
    # The template may add text after the end-of-turn token (SmolLM2: a newline): no loss there.
    if end_of_turn_id in full[len(prompt) :]:
        last = len(full) - 1 - full[::-1].index(end_of_turn_id)
        labels[last + 1 :] = [-100] * (len(full) - last - 1)
    return {"input_ids": full[:max_seq_length], "labels": labels[:max_seq_length]}
