"""Unit tests of the pgml.transform arguments a call turns into (no database needed)."""

import os
import unittest
from unittest import mock

from pgmld_client import OpenSourceAI, PgmlError
from pgmld_client._request import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, build_call

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


class BuildCallTest(unittest.TestCase):
    def test_string_model_gets_the_sdk_defaults(self):
        call = build_call("llm.gguf", MESSAGES)
        self.assertEqual(call.model_name, "llm.gguf")
        self.assertEqual(call.task, {"task": "conversational", "model": "llm.gguf"})
        self.assertEqual(call.inputs, MESSAGES)
        self.assertEqual(
            call.args,
            {
                "max_new_tokens": DEFAULT_MAX_TOKENS,
                "temperature": DEFAULT_TEMPERATURE,
                "do_sample": True,
                "num_return_sequences": 1,
                "return_usage": True,
            },
        )

    def test_the_guides_model_dict(self):
        # The fine-tuning guide's call: options and generation settings in one dict.
        model = {
            "model": "santiadavani/fingpt-llama2-7b-chat",
            "token": "TOKEN",
            "load_in_8bit": "true",
            "temperature": 0.1,
            "repetition_penalty": 1.5,
        }
        call = build_call(model, MESSAGES)
        self.assertEqual(
            call.task,
            {"task": "conversational", "model": "santiadavani/fingpt-llama2-7b-chat", "token": "TOKEN", "load_in_8bit": True},
        )
        self.assertEqual(call.args["temperature"], 0.1)
        self.assertEqual(call.args["repetition_penalty"], 1.5)
        self.assertTrue(call.args["do_sample"])
        self.assertEqual(model["model"], "santiadavani/fingpt-llama2-7b-chat", "the caller's dict is not changed")

    def test_explicit_parameters_win_and_zero_temperature_is_greedy(self):
        call = build_call(
            {"model": "m", "temperature": 0.7, "max_tokens": 5},
            MESSAGES,
            max_tokens=12,
            temperature=0,
            chat_template="{{ messages }}",
            extra={"seed": 3, "stop": ["\n"], "adapter": "/srv/adapter"},
        )
        self.assertEqual(call.args["max_new_tokens"], 12)
        self.assertEqual(call.args["temperature"], 0)
        self.assertFalse(call.args["do_sample"])
        self.assertEqual(call.args["chat_template"], "{{ messages }}")
        self.assertEqual((call.args["seed"], call.args["stop"]), (3, ["\n"]))
        self.assertNotIn("max_tokens", call.args)
        self.assertEqual(call.task["adapter"], "/srv/adapter")

    def test_n_and_fingerprint(self):
        a = build_call("m", MESSAGES, n=3)
        self.assertEqual(a.args["num_return_sequences"], 3)
        self.assertEqual(a.system_fingerprint, build_call("m", MESSAGES, n=3).system_fingerprint)
        self.assertNotEqual(a.system_fingerprint, build_call("m", MESSAGES, n=2).system_fingerprint)
        self.assertRegex(a.system_fingerprint, r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            build_call({"token": "x"}, MESSAGES)
        with self.assertRaises(ValueError):
            build_call(" ", MESSAGES)
        with self.assertRaises(TypeError):
            build_call(42, MESSAGES)
        with self.assertRaises(TypeError):
            build_call("m", "hello")
        with self.assertRaises(TypeError):
            build_call("m", ["hello"])
        with self.assertRaises(ValueError):
            build_call("m", MESSAGES, extra={"task": "text-generation"})


class ClientTest(unittest.TestCase):
    def test_database_url_from_the_environment(self):
        with mock.patch.dict(os.environ, {"PGML_DATABASE_URL": "postgresql://u@h/db"}):
            self.assertEqual(OpenSourceAI().database_url, "postgresql://u@h/db")
            self.assertEqual(OpenSourceAI("postgresql://x@y/z").database_url, "postgresql://x@y/z")
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaises(ValueError):
                OpenSourceAI()

    def test_streams_take_one_choice(self):
        client = OpenSourceAI("postgresql://nobody@127.0.0.1:1/none")
        with self.assertRaisesRegex(ValueError, "n must be 1"):
            client.chat_completions_create_stream("m", MESSAGES, n=2)

    def test_connection_failures_are_pgml_errors(self):
        client = OpenSourceAI("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        with self.assertRaises(PgmlError) as caught:
            client.chat_completions_create("m", MESSAGES)
        self.assertIsNone(caught.exception.sqlstate)


if __name__ == "__main__":
    unittest.main()
