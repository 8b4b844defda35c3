"""Unit tests of the response shapes built from pgml.transform's answers."""

import unittest

from pgmld_client import PgmlError
from pgmld_client._request import build_call
from pgmld_client._response import UnexpectedAnswer, chunk, completion, last_chunk, stream_row

CALL = build_call("m", [{"role": "user", "content": "hi"}], temperature=0)


class ResponseTest(unittest.TestCase):
    def test_completion_has_the_guides_shape_with_real_counts(self):
        answer = {
            "outputs": ["Paris."],
            "finish_reasons": ["stop"],
            "usage": {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33},
        }
        out = completion(CALL, answer, response_id="id-1", created=7)
        self.assertEqual(
            out,
            {
                "id": "id-1",
                "object": "chat.completion",
                "created": 7,
                "model": "m",
                "system_fingerprint": CALL.system_fingerprint,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33},
            },
        )

    def test_answers_without_counts_are_refused(self):
        with self.assertRaises(UnexpectedAnswer):
            completion(CALL, ["Paris."])
        with self.assertRaises(UnexpectedAnswer):
            completion(CALL, {"outputs": ["x"], "finish_reasons": ["stop"], "usage": {"prompt_tokens": 1}})

    def test_stream_rows_and_chunks(self):
        self.assertEqual(stream_row([" Par"]), ("piece", " Par"))
        done = stream_row({"finish_reason": "length", "usage": {"prompt_tokens": 2, "completion_tokens": 4}})
        self.assertEqual(done, ("done", "length", {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}))
        with self.assertRaises(UnexpectedAnswer):
            stream_row("text")
        c = chunk(CALL, "id", 1, "is")
        self.assertEqual(c["object"], "chat.completion.chunk")
        self.assertEqual(c["choices"], [{"index": 0, "delta": {"role": "assistant", "content": "is"}, "finish_reason": None}])
        last = last_chunk(CALL, "id", 1, "stop", done[2])
        self.assertEqual(last["choices"], [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        self.assertEqual(last["usage"]["total_tokens"], 6)


class ErrorTest(unittest.TestCase):
    def test_psycopg_diagnostics_are_kept(self):
        class Diag:
            message_primary = "unknown role \"tool\""
            message_detail = None
            message_hint = "Roles: system, user, assistant."

        class FakeError(Exception):
            sqlstate = "22023"
            diag = Diag()

        e = PgmlError.from_psycopg(FakeError("ERROR: unknown role"))
        self.assertEqual((e.sqlstate, e.message, e.hint), ("22023", 'unknown role "tool"', "Roles: system, user, assistant."))
        self.assertIn("22023", str(e))
        self.assertIn("HINT: Roles", str(e))


if __name__ == "__main__":
    unittest.main()
