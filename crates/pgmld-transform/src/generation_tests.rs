//! Unit tests of [`super`]: argument checking and the layering of sampling settings.

use super::*;
use serde_json::json;

fn req(task: Json, args: Json) -> Result<GenerateRequest, TransformError> {
    generate_request(task.as_object().unwrap(), &Value::Json(args))
}

fn err(task: Json, args: Json) -> String {
    req(task, args).unwrap_err().to_string()
}

#[test]
fn defaults_follow_transformers() {
    let r = req(json!({"task": "conversational", "model": "m"}), json!({})).unwrap();
    assert_eq!(r.task, GenTask::Conversational);
    assert_eq!(
        r.sampling.settings,
        GenerationDefaults::default(),
        "nothing set: the model decides"
    );
    let cfg = r.sampling.config(&GenerationDefaults::default(), 0);
    assert!(!cfg.do_sample, "greedy by default");
    assert_eq!((cfg.top_k, cfg.max_new_tokens), (Some(50), DEFAULT_MAX_NEW_TOKENS));
    assert!(!r.return_full_text && !r.return_usage);
    let t =
        req(json!({"task": "text-generation", "model": "m"}), json!({"max_tokens": 5, "top_k": 0}))
            .unwrap();
    assert!(t.return_full_text, "the pipeline returns the prompt too");
    let cfg = t.sampling.config(&GenerationDefaults::default(), 0);
    assert_eq!((cfg.max_new_tokens, cfg.top_k), (5, None));
    let all =
        req(json!({"task": "text-generation", "model": "m"}), json!({"top_k": null})).unwrap();
    assert_eq!(
        all.sampling.config(&GenerationDefaults { top_k: Some(20), ..Default::default() }, 0).top_k,
        None
    );
}

#[test]
fn the_models_generation_config_fills_what_the_call_leaves_unset() {
    let llama3 = GenerationDefaults {
        do_sample: Some(true),
        temperature: Some(0.6),
        top_p: Some(0.9),
        ..Default::default()
    };
    let r = req(json!({"task": "conversational", "model": "m"}), json!({"top_p": 0.5, "seed": 7}))
        .unwrap();
    let cfg = r.sampling.config(&llama3, 2);
    assert!(cfg.do_sample, "the model samples by default");
    assert_eq!((cfg.temperature, cfg.top_p, cfg.top_k, cfg.seed), (0.6, 0.5, Some(50), Some(9)));
    let greedy =
        req(json!({"task": "conversational", "model": "m"}), json!({"do_sample": false})).unwrap();
    assert!(!greedy.sampling.config(&llama3, 0).do_sample, "the call's do_sample wins");
    // n > 1 is checked against the layered settings once the model is known.
    let n = req(json!({"task": "conversational", "model": "m"}), json!({"n": 2})).unwrap();
    assert!(check_sequences(2, &n.sampling.config(&llama3, 0)).is_ok());
    let e = check_sequences(2, &n.sampling.config(&GenerationDefaults::default(), 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_return_sequences 2 needs sampling"), "{e}");
}

#[test]
fn sampling_arguments_are_read() {
    let r = req(
        json!({"task": "conversational", "model": " m ", "load_in_8bit": true, "adapter": "file:///a", "token": "x"}),
        json!({"max_new_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.1,
               "do_sample": true, "seed": 3, "stop": ["\n\n", "END"], "n": 2, "return_usage": true}),
    )
    .unwrap();
    assert_eq!(r.model, "m");
    assert!(r.load_in_8bit);
    assert_eq!(r.adapter, Some(PathBuf::from("/a")));
    let s = &r.sampling;
    let cfg = s.config(&GenerationDefaults::default(), 0);
    assert_eq!(
        (cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, cfg.seed),
        (7, 0.7, 0.9, Some(5), Some(3))
    );
    assert_eq!(cfg.repetition_penalty, 1.1);
    assert!(cfg.do_sample && r.return_usage);
    assert_eq!(s.stop, vec!["\n\n".to_string(), "END".to_string()]);
    assert_eq!(r.num_return_sequences, 2);
    let zero = req(
        json!({"task": "conversational", "model": "m"}),
        json!({"do_sample": true, "temperature": 0}),
    )
    .unwrap();
    assert!(
        !zero.sampling.config(&GenerationDefaults::default(), 0).do_sample,
        "temperature 0 is greedy"
    );
    let one_stop =
        req(json!({"task": "conversational", "model": "m"}), json!({"stop": "x"})).unwrap();
    assert_eq!(one_stop.sampling.stop, vec!["x".to_string()]);
    let as_text = generate_request(
        json!({"task": "text-generation", "model": "m"}).as_object().unwrap(),
        &Value::Text("{\"seed\": 1}".into()),
    );
    assert_eq!(as_text.unwrap().sampling.seed, Some(1));
}

#[test]
fn bad_arguments_name_the_value() {
    let t = json!({"task": "conversational", "model": "m"});
    assert!(
        err(t.clone(), json!({"temperature": -0.5})).contains("temperature must be >= 0, not -0.5")
    );
    // The message names the key the caller used (PostgresML's SDK sends max_tokens).
    assert!(err(t.clone(), json!({"max_tokens": 0}))
        .contains("max_tokens must be between 1 and 32768, not 0"));
    assert!(!err(t.clone(), json!({"max_tokens": 0})).contains("max_new_tokens"));
    assert!(err(t.clone(), json!({"max_new_tokens": 10_000_000}))
        .contains("max_new_tokens must be between 1 and 32768, not 10000000"));
    assert!(err(json!({"task": "conversational", "model": "m", "max_tokens": 0}), json!({}))
        .contains("max_tokens must be between 1 and 32768, not 0"));
    assert!(err(t.clone(), json!({"max_new_tokens": -3}))
        .contains("max_new_tokens must be a positive integer, not -3"));
    assert!(err(t.clone(), json!({"max_new_tokens": 3, "max_tokens": 4})).contains("disagree"));
    assert!(err(t.clone(), json!({"top_p": 0})).contains("top_p"));
    assert!(err(t.clone(), json!({"repetition_penalty": 0})).contains("repetition_penalty"));
    assert!(err(t.clone(), json!({"do_sample": "sometimes"}))
        .contains("do_sample must be true or false, not \"sometimes\""));
    assert!(err(t.clone(), json!({"stop": [1]})).contains("stop must hold strings"));
    assert!(err(t.clone(), json!({"stop": [""]})).contains("non-empty"));
    assert!(err(t.clone(), json!({"n": 2, "do_sample": false})).contains("needs sampling"));
    assert!(err(t.clone(), json!({"n": 2, "temperature": 0})).contains("needs sampling"));
    assert!(err(t.clone(), json!({"return_full_text": true})).contains("text-generation task only"));
    assert!(err(t.clone(), json!({"max_lenght": 3})).contains("unknown args key \"max_lenght\""));
    assert!(err(json!({"task": "text-generation", "model": "m"}), json!({"chat_template": "x"}))
        .contains("conversational task only"));
    assert!(err(json!({"task": "conversational"}), json!({})).contains("names no model"));
    assert!(err(json!({"task": "conversational", "model": "m", "modle": 1}), json!({}))
        .contains("unknown task key \"modle\""));
    assert!(matches!(
        req(json!({"task": "conversational", "model": "m", "load_in_4bit": true}), json!({})),
        Err(TransformError::Unsupported(_))
    ));
}

#[test]
fn messages_come_from_jsonb_or_text() {
    let v = Value::Array(vec![
        Value::Json(json!({"role": "system", "content": "Be brief."})),
        Value::Text(r#"{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}"#.into()),
    ]);
    let GenInputs::Messages(m) = gen_inputs(GenTask::Conversational, &v).unwrap() else {
        panic!("messages")
    };
    assert_eq!(m[0], Message { role: "system".into(), content: "Be brief.".into() });
    assert_eq!(m[1], Message { role: "user".into(), content: "Hi!".into() });
    let e = |items: Vec<Value>| {
        gen_inputs(GenTask::Conversational, &Value::Array(items)).unwrap_err().to_string()
    };
    assert!(e(vec![Value::Json(json!({"role": "robot", "content": "x"}))])
        .contains("inputs[1] has unknown role \"robot\""));
    assert!(e(vec![Value::Json(json!({"role": "user"}))]).contains("no \"content\""));
    assert!(e(vec![Value::Text("hello".into())]).contains("not a JSON chat message"));
    assert!(e(vec![Value::Json(json!({"role": "user", "content": "a"})), Value::Null])
        .contains("inputs[2] is NULL"));
    assert!(e(vec![]).contains("no messages"));
    let p = gen_inputs(GenTask::TextGeneration, &Value::Text("Once".into())).unwrap();
    assert_eq!(p, GenInputs::Prompts(vec!["Once".into()]));
}

#[test]
fn a_whole_call_parses() {
    let call = GenerateCall::parse(
        &Value::Text(r#"{"task": "text-generation", "model": "/m.gguf"}"#.into()),
        &Value::Null,
        &Value::Array(vec![Value::Text("a".into()), Value::Text("b".into())]),
    )
    .unwrap();
    assert_eq!(call.inputs, GenInputs::Prompts(vec!["a".into(), "b".into()]));
    assert_eq!(call.request.model, "/m.gguf");
}

#[test]
fn postgresml_sdk_task_objects_are_understood() {
    // what PostgresML's OpenSourceAI sends: generation kwargs inside the task object,
    // booleans as strings
    let task = json!({"task": "conversational", "model": "m", "token": "t",
        "load_in_8bit": "true", "temperature": 0.1, "repetition_penalty": 1.5});
    let r = req(task, json!({"max_tokens": 7})).unwrap();
    assert!(r.load_in_8bit);
    assert_eq!(r.sampling.settings.temperature, Some(0.1));
    assert_eq!(r.sampling.settings.repetition_penalty, Some(1.5));
    assert_eq!(r.sampling.config(&GenerationDefaults::default(), 0).max_new_tokens, 7);
    // explicit args win over the task object
    let r = req(
        json!({"task": "conversational", "model": "m", "temperature": 0.1}),
        json!({"temperature": 0.9}),
    )
    .unwrap();
    assert_eq!(r.sampling.settings.temperature, Some(0.9));
    // string booleans, as Postgres reads them; anything else is refused by value
    let r = req(json!({"task": "conversational", "model": "m", "load_in_8bit": "off"}), json!({}))
        .unwrap();
    assert!(!r.load_in_8bit);
    let r = req(json!({"task": "text-generation", "model": "m"}), json!({"do_sample": "TRUE"}))
        .unwrap();
    assert_eq!(r.sampling.settings.do_sample, Some(true));
    assert!(err(
        json!({"task": "conversational", "model": "m", "load_in_8bit": "maybe"}),
        json!({})
    )
    .contains("load_in_8bit must be true or false, not \"maybe\""));
    // unknown keys are still refused, naming the known ones (task and generation keys)
    let e = err(json!({"task": "conversational", "model": "m", "temprature": 1}), json!({}));
    assert!(e.contains("unknown task key \"temprature\""), "{e}");
    let hint = match req(json!({"task": "conversational", "model": "m", "x": 1}), json!({})) {
        Err(TransformError::BadArgument { hint, .. }) => hint,
        other => panic!("{other:?}"),
    };
    assert!(hint.contains("temperature") && hint.contains("load_in_8bit"), "{hint}");
}

#[test]
fn compatibility_keys_are_accepted_with_a_notice() {
    let r = req(
        json!({"task": "conversational", "model": "m", "model_type": "llama",
               "trust_remote_code": true, "device_map": "auto"}),
        json!({}),
    )
    .unwrap();
    assert_eq!(r.ignored_keys, ["model_type", "trust_remote_code", "device_map"]);
    assert!(ignored_key_notice("model_type").contains("config"));
    assert!(err(json!({"task": "conversational", "model": "m", "model_type": 3}), json!({}))
        .contains("model_type must be a string"));
    assert!(err(
        json!({"task": "conversational", "model": "m", "trust_remote_code": "x"}),
        json!({})
    )
    .contains("trust_remote_code must be true or false"));
    let plain = req(json!({"task": "conversational", "model": "m"}), json!({})).unwrap();
    assert!(plain.ignored_keys.is_empty());
}

#[test]
fn text_generation_with_chat_messages_is_one_conversation() {
    let task = Value::Json(json!({"task": "text-generation", "model": "m"}));
    let msgs = Value::Array(vec![
        Value::Json(json!({"role": "system", "content": "Be brief."})),
        Value::Json(json!({"role": "user", "content": "Hi"})),
    ]);
    let call = GenerateCall::parse(&task, &Value::Null, &msgs).unwrap();
    assert_eq!(call.request.task, GenTask::Conversational);
    assert!(!call.request.return_full_text);
    assert!(matches!(&call.inputs, GenInputs::Messages(m) if m.len() == 2));
    // messages as JSON text too (text[] from a driver)
    let text_msgs = Value::Array(vec![Value::Text(r#"{"role": "user", "content": "Hi"}"#.into())]);
    let call = GenerateCall::parse(&task, &Value::Null, &text_msgs).unwrap();
    assert_eq!(call.request.task, GenTask::Conversational);
    // plain prompts stay prompts
    let prompts = Value::Array(vec![Value::Text("Once upon a time".into())]);
    let call = GenerateCall::parse(&task, &Value::Null, &prompts).unwrap();
    assert_eq!(call.request.task, GenTask::TextGeneration);
    assert!(call.request.return_full_text);
    // return_full_text cannot apply to a chat
    let e = GenerateCall::parse(&task, &Value::Json(json!({"return_full_text": true})), &msgs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("return_full_text"), "{e}");
}
