//! Bounded fuzzing (proptest) of everything that reads client bytes before the upstream
//! sees them: the frame splitter, the startup packet reader, the frontend decoders, and
//! the interception path in pgmld-sql (call finder, plan builder, per-row blocks, cursor
//! commands, bound parameters). Inputs are arbitrary bytes and well-formed frames or
//! pgml statements with random mutations; nothing may panic. The case counts keep the
//! whole module to a few seconds of CPU, so it runs with every `cargo test`.

use crate::frontend::decode;
use crate::wire;
use bytes::{Bytes, BytesMut};
use pgmld_sql::analyze::{find_all_calls, find_calls, mentions_pgml, split_statements};
use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::streaming::{mentions_cursor_command, parse_cursor_command, stream_form};
use pgmld_sql::{
    next_row_block, Args, CallContext, Output, Param, PgmlFunction, Plan, Registry, Returns,
    Signature, SqlType, Value,
};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
use pgwire::messages::simplequery::Query;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::sync::{Arc, OnceLock};

/// Statements the mutations start from: the call shapes intercept.rs serves.
const SEEDS: &[&str] = &[
    "SELECT pgml.version()",
    "SELECT pgml.version() || '!' AS v, 1",
    "SELECT pgml.transform('{\"task\": \"x\"}'::jsonb, inputs => ARRAY['a', 'b'])",
    "SELECT pgml.transform(task => $1, args => $2::jsonb, inputs => $3)",
    "SELECT t.id, pgml.transform('{}', inputs => ARRAY[t.body]) FROM t WHERE t.id > $1 ORDER BY 1",
    "SELECT * FROM pgml.load_dataset('imdb', \"limit\" => 10) AS d(n, r)",
    "SELECT pgml.embed('m', s.text) FROM (SELECT text FROM docs LIMIT 3) s",
    "SELECT pgml.numbers(3)",
    "DECLARE c CURSOR FOR SELECT * FROM pgml.numbers($1)",
    "FETCH FORWARD 2 FROM c; MOVE -1 IN c; CLOSE ALL",
    "BEGIN; SELECT pgml.version(); SELECT $$pgml;$$; COMMIT",
    "WITH x AS (SELECT pgml.embed('m', 'é€𝄞')) SELECT * FROM x -- pgml",
    "SELECT pgml.transform(pgml.version()::jsonb), E'\\x27pgml'",
];

/// Characters the mutations insert: SQL punctuation, quotes, and multi-byte text.
const PALETTE: &[char] = &[
    '\'', '"', '$', '(', ')', ',', ';', ':', '=', '>', '[', ']', ' ', '\n', '-', '/', '*', '\\',
    '.', '0', '9', 'a', 'E', 'p', 'é', '€', '𝄞', '\0',
];

struct Fake(Signature);

impl PgmlFunction for Fake {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, _args: Args) -> CallFuture {
        Box::pin(async { Ok(Output::Scalar(Value::Null)) })
    }
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Registry::with_builtins();
        let text = |n| ParamSpec::required(n, SqlType::Text);
        for (name, params, returns) in [
            (
                "transform",
                vec![
                    ParamSpec::required("task", SqlType::Jsonb),
                    ParamSpec::optional("args", SqlType::Jsonb, Value::Json(serde_json::json!({}))),
                    ParamSpec::optional("inputs", SqlType::TextArray, Value::Array(vec![])),
                ],
                Returns::Scalar(SqlType::Jsonb),
            ),
            ("embed", vec![text("model"), text("text")], Returns::Scalar(SqlType::Jsonb)),
            (
                "load_dataset",
                vec![text("source"), ParamSpec::optional("limit", SqlType::Int8, Value::Null)],
                Returns::Table(vec![("table_name", SqlType::Text), ("rows", SqlType::Int8)]),
            ),
            (
                "numbers",
                vec![ParamSpec::required("n", SqlType::Int8)],
                Returns::SetOf(SqlType::Jsonb),
            ),
        ] {
            r.register(Arc::new(Fake(Signature { name, params, returns })));
        }
        r
    })
}

/// One edit of a statement: (position, operation, character).
fn sql_edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    prop::collection::vec((any::<usize>(), 0u8..5, prop::sample::select(PALETTE)), 0..6)
}

/// Applies edits at character boundaries: insert, delete, replace, duplicate a span, cut.
fn mutate(seed: &str, edits: &[(usize, u8, char)]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for &(at, op, c) in edits {
        let i = at % (s.len() + 1);
        match op {
            0 => s.insert(i, c),
            1 if i < s.len() => {
                s.remove(i);
            }
            2 if i < s.len() => s[i] = c,
            3 => {
                let span: Vec<char> = s[i..].iter().take(8).copied().collect();
                s.splice(i..i, span);
            }
            4 => s.truncate(i),
            _ => {}
        }
    }
    s.into_iter().collect()
}

/// Everything the interception path does with a statement's text before the upstream
/// runs it; results are thrown away, only panics matter.
fn intercept_text(sql: &str, params: &[Param]) {
    let r = registry();
    let _ = (
        mentions_pgml(sql),
        mentions_cursor_command(sql.as_bytes()),
        parse_cursor_command(sql),
        stream_form(sql),
    );
    if let Some(segments) = split_statements(sql) {
        for seg in segments {
            let _ = sql.get(seg).map(|s| (find_calls(s), parse_cursor_command(s)));
        }
    }
    let _ = (find_calls(sql), find_all_calls(sql));
    if let Ok(Some(block)) = next_row_block(sql, r) {
        let _ = (block.source_sql().len(), block.calls().len(), sql.get(block.replaced_range()));
        let _ = Plan::build(block.source_sql(), r);
    }
    if let Ok(Some(plan)) = Plan::build(sql, r) {
        let _ = (plan.shape_sql(), plan.function_names(), plan.streaming(), plan.stream_types());
        let ctx = CallContext::detached("db", "user");
        let _ = runtime().block_on(plan.execute(params, &ctx));
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("test runtime"))
}

/// Bound parameters of any type, format and content.
fn params() -> impl Strategy<Value = Vec<Param>> {
    let oid =
        prop::sample::select(&[0u32, 16, 20, 21, 23, 25, 114, 700, 701, 1009, 3802, 3807, 600][..]);
    let bytes = prop::option::of(prop::collection::vec(any::<u8>(), 0..24));
    prop::collection::vec(
        (oid, any::<bool>(), bytes).prop_map(|(type_oid, binary, bytes)| Param {
            type_oid,
            binary,
            bytes,
        }),
        0..4,
    )
}

/// Every frontend decoder on one frame; decoded statement text goes on to interception.
fn decode_all(frame: &Bytes, params: &[Param]) {
    if let Ok(q) = decode::<Query>(frame) {
        intercept_text(&q.query, params);
    }
    if let Ok(p) = decode::<Parse>(frame) {
        intercept_text(&p.query, params);
    }
    let _ = (
        decode::<Bind>(frame),
        decode::<Execute>(frame),
        decode::<Describe>(frame),
        decode::<Close>(frame),
    );
}

/// A well-formed frontend frame of each kind pgmld decodes.
fn frames() -> impl Strategy<Value = Bytes> {
    let text = (prop::sample::select(SEEDS), sql_edits()).prop_map(|(s, e)| mutate(s, &e));
    let values =
        prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), 0..4);
    (0u8..6, text, "[a-z_0-9]{0,6}", values, prop::collection::vec(0i16..2, 0..3), any::<i32>())
        .prop_map(|(kind, sql, name, values, formats, n)| {
            let mut b = BytesMut::new();
            match kind {
                0 => wire::query(&sql, &mut b),
                1 => wire::parse(&name, &sql, vec![25; formats.len()], &mut b),
                2 => {
                    let values = values.into_iter().map(|v| v.map(Bytes::from)).collect();
                    wire::bind(
                        &name,
                        "",
                        &Bind::new(None, None, formats.clone(), values, formats),
                        &mut b,
                    )
                }
                3 => wire::execute(&name, n, &mut b),
                4 => wire::describe(if n % 2 == 0 { b'S' } else { b'P' }, &name, &mut b),
                _ => wire::close(b'P', &name, &mut b),
            }
            b.freeze()
        })
}

/// Byte-level damage to a frame: flip, cut, insert, or rewrite the length word.
fn damage(frame: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for &(at, op, byte) in edits {
        let i = at % (f.len() + 1);
        match op {
            0 if i < f.len() => f[i] ^= byte | 1,
            1 => f.truncate(i),
            2 => f.insert(i, byte),
            3 if f.len() >= 5 => {
                f[1..5].copy_from_slice(&(u32::from(byte) << (8 * (at % 4) as u32)).to_be_bytes())
            }
            _ => {}
        }
    }
    f
}

/// `cases` per property, or `PGMLD_FUZZ_CASES` for a longer hunt by hand.
fn config(cases: u32) -> Config {
    let cases =
        std::env::var("PGMLD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn splitter_and_decoders_survive_any_byte_stream(
        stream in prop::collection::vec(any::<u8>(), 0..256),
        cuts in prop::collection::vec(1usize..64, 1..8),
        max in prop::sample::select(&[4usize, 16, 64, 1 << 20][..]),
    ) {
        let mut buf = BytesMut::new();
        let mut rest = &stream[..];
        'feed: for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*cut).min(rest.len()));
            buf.extend_from_slice(now);
            rest = later;
            loop {
                match wire::split_message(&mut buf, max) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.len() >= 5 && frame.len() <= max + 1);
                        decode_all(&frame, &[]);
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        // Declared lengths go up to 4 GiB; only bytes that arrived may take memory.
        prop_assert!(buf.capacity() <= 4096, "a declared length reserved memory");
    }

    #[test]
    fn startup_packets_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64), len in 0u32..20_000) {
        for input in [bytes.clone(), [&len.to_be_bytes()[..], &bytes[..]].concat()] {
            if let Ok(packet) = runtime().block_on(wire::read_startup_packet(&mut &input[..])) {
                let _ = (wire::startup_code(&packet), wire::decode_startup(&packet));
            }
        }
    }

    #[test]
    fn damaged_frames_are_refused_not_panicked_on(
        frame in frames(),
        edits in prop::collection::vec((any::<usize>(), 0u8..4, any::<u8>()), 0..4),
        params in params(),
    ) {
        decode_all(&frame, &params);
        let damaged = Bytes::from(damage(&frame, &edits));
        let mut buf = BytesMut::from(&damaged[..]);
        if let Ok(Some(f)) = wire::split_message(&mut buf, 1 << 20) {
            decode_all(&f, &params);
        }
        decode_all(&damaged, &params);
    }

    #[test]
    fn bound_parameters_of_any_bytes(params in params()) {
        for (i, p) in params.iter().enumerate() {
            let _ = p.decode(i + 1);
        }
        let _ = wire::parameter_types(params.first().and_then(|p| p.bytes.as_deref()).unwrap_or(&[]));
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mutated_statements_go_through_interception(seed in prop::sample::select(SEEDS), edits in sql_edits(), params in params()) {
        intercept_text(&mutate(seed, &edits), &params);
    }
}

/// The mutations start where interception really happens: every seed but the cursor
/// commands builds a plan, and the per-row seeds find a block.
#[test]
fn seeds_reach_the_interception_path() {
    for s in SEEDS.iter().filter(|s| !s.starts_with("FETCH")) {
        assert!(matches!(Plan::build(s, registry()), Ok(Some(_))), "{s}");
    }
    assert!(matches!(next_row_block(SEEDS[4], registry()), Ok(Some(_))));
    assert!(parse_cursor_command("FETCH FORWARD 2 FROM c").is_some());
}
