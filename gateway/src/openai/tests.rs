use std::collections::BTreeMap;

use moe_model::sampling::Shaping;
use serde_json::json;

use super::*;

const LIMITS: Limits = Limits {
    max_tokens_limit: 1000,
    context_length: 4096,
    vocab_size: 32000,
};

fn completion(body: Value) -> Result<Validated<Vec<Prompt>>, ApiError> {
    CompletionRequest::from_json(body.to_string().as_bytes())?.validate(&LIMITS)
}

fn chat(body: Value) -> Result<Validated<Vec<ChatMessage>>, ApiError> {
    ChatCompletionRequest::from_json(body.to_string().as_bytes())?.validate(&LIMITS)
}

/// The one prompt of a completion request (panics on a batch).
fn prompt(prompt: Value) -> Result<Prompt, ApiError> {
    let prompts = completion(json!({"model": "m", "prompt": prompt}))?.input;
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    Ok(prompts.into_iter().next().unwrap())
}

/// A completion request with `field` set, refused: its (status, param, message).
fn refused(field: &str, value: Value) -> (u16, Option<String>, String) {
    let mut body = json!({"model": "m", "prompt": "hi"});
    body[field] = value;
    let error = completion(body).expect_err("must be refused");
    (error.status(), error.param, error.message)
}

fn chat_refused(body: Value) -> ApiError {
    chat(body).expect_err("must be refused")
}

fn meta() -> ResponseMeta {
    ResponseMeta {
        request_id: "42".to_owned(),
        created: 1_700_000_000,
        model: "mixtral".to_owned(),
    }
}

#[test]
fn every_prompt_form_parses() {
    assert_eq!(prompt(json!("hi")).unwrap(), Prompt::Text("hi".into()));
    assert_eq!(
        prompt(json!([1, 2, 3])).unwrap(),
        Prompt::Tokens(vec![1, 2, 3])
    );
    assert_eq!(prompt(json!(["hi"])).unwrap(), Prompt::Text("hi".into()));
    assert_eq!(prompt(json!([[7, 8]])).unwrap(), Prompt::Tokens(vec![7, 8]));
    assert_eq!(prompt(json!([5])).unwrap(), Prompt::Tokens(vec![5]));
}

#[test]
fn batches_are_read_and_malformed_prompts_are_refused() {
    let batch = |value: Value| completion(json!({"model": "m", "prompt": value}));
    let read = batch(json!(["a", [1, 2]])).unwrap().input;
    assert_eq!(read, [Prompt::Text("a".into()), Prompt::Tokens(vec![1, 2])]);
    let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let error = batch(json!(many)).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("prompt"), "{error}");
    let streamed = completion(json!({"model": "m", "prompt": ["a", "b"], "stream": true}));
    assert_eq!(streamed.unwrap_err().param.as_deref(), Some("prompt"));
    let n = completion(json!({"model": "m", "prompt": "a", "n": 3})).unwrap();
    assert_eq!(n.params.n, 3);
    let streamed = completion(json!({"model": "m", "prompt": "a", "n": 2, "stream": true}));
    assert_eq!(streamed.unwrap_err().param.as_deref(), Some("n"));
    let too_many = completion(json!({"model": "m", "prompt": ["a", "b"], "n": 33}));
    assert!(too_many.unwrap_err().to_string().contains("at most 64"));
    for bad in [
        json!([]),
        json!([[]]),
        json!([1.5]),
        json!([-1]),
        json!([1, "a"]),
        json!([["a"]]),
    ] {
        let error = prompt(bad.clone()).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("prompt"), "{bad}");
    }
    for bad in [json!(3), json!({"text": "hi"}), json!([{}])] {
        let error = prompt(bad.clone()).unwrap_err();
        assert!(
            error.message.contains("prompt must be a string"),
            "{bad}: {error}"
        );
    }
    assert!(
        prompt(json!([4_294_967_296u64]))
            .unwrap_err()
            .message
            .contains("token ids")
    );
}

#[test]
fn completion_defaults() {
    let v = completion(json!({"model": "m", "prompt": "hi"})).unwrap();
    assert_eq!(v.model, "m");
    assert_eq!(
        v.params,
        SamplingParams {
            max_tokens: Some(16),
            temperature: 1.0,
            top_p: 1.0,
            shaping: Shaping::default(),
            ending: Ending::default(),
            seed: None,
            stop: vec![],
            logprobs: None,
            echo: false,
            precision: Precision::Auto,
            stream: false,
            include_usage: false,
            n: 1,
        }
    );
}

#[test]
fn completion_fields_are_carried() {
    let v = completion(json!({
        "model": "m", "prompt": "hi", "max_tokens": 100, "temperature": 0, "top_p": 0.5,
        "seed": 7, "stop": "\n", "n": 1, "stream": true,
        "stream_options": {"include_usage": true}, "logprobs": 3, "echo": true,
        "precision": "exact",
    }))
    .unwrap();
    let p = v.params;
    assert_eq!(
        (p.max_tokens, p.temperature, p.top_p),
        (Some(100), 0.0, 0.5)
    );
    assert_eq!(
        (p.seed, p.stop, p.logprobs),
        (Some(7), vec!["\n".to_owned()], Some(3))
    );
    assert_eq!(
        (p.echo, p.precision, p.stream, p.include_usage),
        (true, Precision::Exact, true, true)
    );
}

#[test]
fn ranges_are_checked() {
    let cases = [
        (
            "temperature",
            json!(3),
            "temperature must be between 0 and 2, got 3.",
        ),
        (
            "temperature",
            json!(-0.1),
            "temperature must be between 0 and 2, got -0.1.",
        ),
        (
            "top_p",
            json!(0),
            "top_p must be greater than 0 and at most 1, got 0.",
        ),
        (
            "top_p",
            json!(1.5),
            "top_p must be greater than 0 and at most 1, got 1.5.",
        ),
        ("n", json!(0), "n must be between 1 and 64, got 0."),
        ("n", json!(65), "n must be between 1 and 64, got 65."),
        (
            "max_tokens",
            json!(0),
            "max_tokens must be at least 1, got 0.",
        ),
        (
            "max_tokens",
            json!(-5),
            "max_tokens must be at least 1, got -5.",
        ),
        (
            "max_tokens",
            json!(1001),
            "max_tokens must be at most 1000, got 1001.",
        ),
        (
            "logprobs",
            json!(21),
            "logprobs must be between 0 and 20, got 21.",
        ),
        (
            "logprobs",
            json!(-1),
            "logprobs must be between 0 and 20, got -1.",
        ),
        (
            "stop",
            json!(["a", "b", "c", "d", "e"]),
            "stop may hold at most 4 sequences, got 5.",
        ),
        (
            "stop",
            json!(["a", ""]),
            "stop sequences must not be empty.",
        ),
        (
            "stream_options",
            json!({"include_usage": true}),
            "stream_options is only allowed when stream is true.",
        ),
    ];
    for (field, value, message) in cases {
        assert_eq!(
            refused(field, value),
            (400, Some(field.to_owned()), message.to_owned())
        );
    }
}

#[test]
fn wrong_types_name_their_field() {
    let (status, param, message) = refused("temperature", json!("hot"));
    assert_eq!((status, param.as_deref()), (400, Some("temperature")));
    assert!(
        message.starts_with("Invalid `temperature`: invalid type: string"),
        "{message}"
    );
    assert_eq!(refused("stop", json!(3)).1.as_deref(), Some("stop"));
    assert_eq!(refused("stop", json!(["a", 1])).1.as_deref(), Some("stop"));
    assert_eq!(refused("seed", json!(-1)).1.as_deref(), Some("seed"));
    let (_, param, message) = refused("precision", json!("fast"));
    assert_eq!(param.as_deref(), Some("precision"));
    assert!(message.contains("unknown variant `fast`"), "{message}");
}

#[test]
fn body_level_errors() {
    let error = CompletionRequest::from_json(b"{\"model\": ").unwrap_err();
    assert_eq!((error.status(), &error.param), (400, &None));
    assert!(
        error
            .message
            .starts_with("The request body is not valid JSON: "),
        "{error}"
    );
    let error = CompletionRequest::from_json(b"[1, 2]").unwrap_err();
    assert_eq!(error.message, "The request body must be a JSON object.");
    let error = CompletionRequest::from_json(br#"{"prompt": "hi"}"#).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("model"));
    assert_eq!(error.message, "Missing required field `model`.");
    let error = ChatCompletionRequest::from_json(br#"{"model": "m"}"#).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("messages"));
    let error =
        ChatCompletionRequest::from_json(br#"{"model": "m", "messages": [{"content": "x"}]}"#)
            .unwrap_err();
    assert_eq!(error.param.as_deref(), Some("messages"));
    assert!(error.message.contains("missing field `role`"), "{error}");
}

#[test]
fn unknown_fields_are_tolerated() {
    let v = completion(json!({
        "model": "m", "prompt": "hi", "user": "u1", "metadata": {"a": 1},
        "some_future_field": [1, 2], "presence_penalty": 0, "logit_bias": {}, "best_of": 1,
        "suffix": null,
    }))
    .unwrap();
    assert_eq!(v.input, [Prompt::Text("hi".into())]);
    let v = chat(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi", "name": "bob"}],
        "store": false, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
    }))
    .unwrap();
    assert_eq!(v.input.len(), 1);
}

#[test]
fn unimplemented_features_are_refused_when_asked_for() {
    let tool = json!([{"type": "function", "function": {"name": "f"}}]);
    for (field, value) in [
        ("tools", tool),
        ("tool_choice", json!("required")),
        ("response_format", json!({"type": "json_object"})),
        ("best_of", json!(3)),
        ("suffix", json!("end")),
        ("prompt_logprobs", json!(1)),
        ("use_beam_search", json!(true)),
        ("length_penalty", json!(0.5)),
        ("allowed_token_ids", json!([1, 2])),
        ("bad_words", json!(["no"])),
        ("guided_json", json!({"type": "object"})),
        ("guided_regex", json!("a+")),
        ("guided_choice", json!(["a", "b"])),
        ("guided_grammar", json!("root ::= \"a\"")),
        ("skip_special_tokens", json!(false)),
        ("spaces_between_special_tokens", json!(false)),
        ("truncate_prompt_tokens", json!(8)),
    ] {
        let (status, param, message) = refused(field, value);
        assert_eq!((status, param.as_deref()), (400, Some(field)));
        assert_eq!(
            message,
            format!("`{field}` is not supported by this server.")
        );
    }
}

/// vLLM's filters and penalties are taken within its ranges and refused outside them with its
/// messages; -1 and 0 both turn `top_k` off.
#[test]
fn vllm_filters_and_penalties_follow_its_ranges() {
    let body = json!({"model": "m", "prompt": "hi", "top_k": 40, "min_p": 0.05,
                      "repetition_penalty": 1.1, "presence_penalty": -0.5, "frequency_penalty": 2});
    let p = completion(body).unwrap().params.shaping;
    assert_eq!(
        p,
        Shaping {
            top_k: 40,
            min_p: 0.05,
            repetition_penalty: 1.1,
            presence_penalty: -0.5,
            frequency_penalty: 2.0,
            logit_bias: vec![],
        }
    );
    for off in [-1, 0] {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": off});
        assert_eq!(chat(body).unwrap().params.shaping, Shaping::default());
    }
    for (field, value, message) in [
        (
            "top_k",
            json!(-5),
            "top_k must be -1 (disable), 0 (disable) or at least 1, got -5.",
        ),
        ("min_p", json!(7), "min_p must be in [0, 1], got 7."),
        (
            "repetition_penalty",
            json!(0),
            "repetition_penalty must be greater than zero, got 0.",
        ),
        (
            "presence_penalty",
            json!(2.5),
            "presence_penalty must be in [-2, 2], got 2.5.",
        ),
        (
            "frequency_penalty",
            json!(-3),
            "frequency_penalty must be in [-2, 2], got -3.",
        ),
    ] {
        let (status, param, got) = refused(field, value);
        assert_eq!(
            (status, param.as_deref(), got.as_str()),
            (400, Some(field), message)
        );
    }
}

/// `logit_bias`: token ids within the vocabulary, biases within [-100, 100].
#[test]
fn logit_bias_takes_token_ids_in_the_vocabulary_and_biases_in_range() {
    let body = json!({"model": "m", "prompt": "hi", "logit_bias": {"17": 5.5, "2": -100}});
    let bias = completion(body).unwrap().params.shaping.logit_bias;
    assert_eq!(bias, vec![(2, -100.0), (17, 5.5)]);
    for (value, message) in [
        (
            json!({"x": 1}),
            "logit_bias keys must be token ids, got \"x\".",
        ),
        (
            json!({"3": 101}),
            "logit_bias values must be between -100 and 100, got 101 for token 3.",
        ),
        (
            json!({"32000": 1, "40000": 2}),
            "token_id(s) [32000, 40000] in logit_bias contain out-of-vocab token ids. Vocabulary size: 32000",
        ),
    ] {
        let (status, param, got) = refused("logit_bias", value);
        assert_eq!(
            (status, param.as_deref(), got.as_str()),
            (400, Some("logit_bias"), message)
        );
    }
}

/// vLLM's ending rules: `min_tokens` within 0..=max_tokens, with its messages.
#[test]
fn vllm_ending_rules_are_taken_and_checked() {
    let body = json!({"model": "m", "prompt": "hi", "max_tokens": 8, "min_tokens": 3,
                      "ignore_eos": true, "stop_token_ids": [7, 9]});
    let ending = completion(body).unwrap().params.ending;
    assert_eq!(
        ending,
        Ending {
            min_tokens: 3,
            ignore_eos: true,
            stop_token_ids: vec![7, 9],
            include_stop_str: false,
        }
    );
    let (_, param, message) = refused("min_tokens", json!(-1));
    assert_eq!(
        (param.as_deref(), message.as_str()),
        (
            Some("min_tokens"),
            "min_tokens must be greater than or equal to 0, got -1."
        )
    );
    let (_, param, message) = refused("min_tokens", json!(17));
    assert_eq!(
        (param.as_deref(), message.as_str()),
        (
            Some("min_tokens"),
            "min_tokens must be less than or equal to max_tokens=16, got 17."
        )
    );
    let (_, param, _) = refused("stop_token_ids", json!([-3]));
    assert_eq!(param.as_deref(), Some("stop_token_ids"));
}

/// vLLM's defaults of the parameters this server does not implement ask for nothing, and pass.
#[test]
fn unimplemented_parameters_at_their_neutral_values_pass() {
    for (field, value) in [
        ("prompt_logprobs", json!(null)),
        ("skip_special_tokens", json!(true)),
        ("spaces_between_special_tokens", json!(true)),
        ("length_penalty", json!(1)),
    ] {
        let mut body = json!({"model": "m", "prompt": "hi"});
        body[field] = value;
        assert!(completion(body).is_ok(), "{field}");
    }
}

#[test]
fn max_completion_tokens_beats_max_tokens() {
    let v = chat(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10, "max_completion_tokens": 20,
    }))
    .unwrap();
    assert_eq!(v.params.max_tokens, Some(20));
    let v = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 10}),
    )
    .unwrap();
    assert_eq!(v.params.max_tokens, Some(10));
    let v = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(v.params.max_tokens, None);
    let error = chat_refused(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10, "max_completion_tokens": 5000,
    }));
    assert_eq!(error.param.as_deref(), Some("max_completion_tokens"));
}

#[test]
fn chat_logprobs() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let v =
        chat(json!({"model": "m", "messages": user, "logprobs": true, "top_logprobs": 5})).unwrap();
    assert_eq!(v.params.logprobs, Some(5));
    let v = chat(json!({"model": "m", "messages": user, "logprobs": true})).unwrap();
    assert_eq!(v.params.logprobs, Some(0));
    let v = chat(json!({"model": "m", "messages": user, "logprobs": false})).unwrap();
    assert_eq!(v.params.logprobs, None);
    let error = chat_refused(json!({"model": "m", "messages": user, "top_logprobs": 2}));
    assert_eq!(error.param.as_deref(), Some("top_logprobs"));
    assert_eq!(error.message, "top_logprobs requires logprobs to be true.");
    let error =
        chat_refused(json!({"model": "m", "messages": user, "logprobs": true, "top_logprobs": 21}));
    assert_eq!(error.param.as_deref(), Some("top_logprobs"));
}

#[test]
fn chat_messages_are_reduced_to_text() {
    let v = chat(json!({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one"},
                                     {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": null},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ]}))
    .unwrap();
    let texts: Vec<(Role, &str)> = v
        .input
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (Role::System, "be brief"),
            (Role::User, "one\ntwo"),
            (Role::Assistant, ""),
            (Role::Tool, "42"),
        ]
    );
}

#[test]
fn chat_refuses_non_text_content_and_bad_messages() {
    let image = json!({"type": "image_url", "image_url": {"url": "http://x/y.png"}});
    let error = chat_refused(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "see"}, image]},
    ]}));
    assert_eq!(
        (error.status(), error.param.as_deref()),
        (400, Some("messages"))
    );
    assert!(
        error.message.contains("only text content is supported"),
        "{error}"
    );
    let error =
        chat_refused(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}));
    assert_eq!(error.param.as_deref(), Some("messages"));
    assert!(error.message.contains("unknown variant `robot`"), "{error}");
    let error = chat_refused(json!({"model": "m", "messages": [{"role": "user", "content": 5}]}));
    assert_eq!(error.param.as_deref(), Some("messages"));
    let error = chat_refused(json!({"model": "m", "messages": []}));
    assert_eq!(error.message, "messages must hold at least one message.");
}

#[test]
fn context_length_message_is_vllms() {
    let error = check_context(InputField::Messages, 4000, Some(100), &LIMITS).unwrap_err();
    assert_eq!(
        error.message,
        "This model's maximum context length is 4096 tokens. However, you requested 4100 \
         tokens (4000 in the messages, 100 in the completion). Please reduce the length of \
         the messages or completion."
    );
    assert_eq!(
        error.to_json(),
        json!({"error": {"message": error.message, "type": "BadRequestError",
                         "param": "messages", "code": null}})
    );
    assert_eq!(error.status(), 400);
    let error = check_context(InputField::Prompt, 4096, None, &LIMITS).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("prompt"));
    assert_eq!(
        error.message,
        "This model's maximum context length is 4096 tokens. However, you requested 4096 \
         tokens in the messages. Please reduce the length of the messages."
    );
}

#[test]
fn context_budget() {
    assert_eq!(
        check_context(InputField::Prompt, 3996, Some(100), &LIMITS),
        Ok(100)
    );
    assert_eq!(
        check_context(InputField::Messages, 4000, None, &LIMITS),
        Ok(96)
    );
    assert_eq!(
        check_context(InputField::Messages, 10, None, &LIMITS),
        Ok(1000)
    );
}

#[test]
fn completion_json() {
    let logprobs = CompletionLogprobs {
        tokens: vec!["Hi".into(), "!".into()],
        token_logprobs: vec![None, Some(-0.5)],
        top_logprobs: vec![
            None,
            Some(TopLogprobs(vec![("!".into(), -0.5), (".".into(), -1.25)])),
        ],
        text_offset: vec![0, 2],
    };
    let completion = Completion::new(
        &meta(),
        "Hi!".into(),
        Some(logprobs),
        FinishReason::Length,
        Usage::new(3, 2),
    );
    assert_eq!(
        serde_json::to_value(&completion).unwrap(),
        json!({
            "id": "cmpl-42", "object": "text_completion", "created": 1_700_000_000,
            "model": "mixtral",
            "choices": [{"index": 0, "text": "Hi!", "finish_reason": "length", "stop_reason": null, "logprobs": {
                "tokens": ["Hi", "!"], "token_logprobs": [null, -0.5],
                "top_logprobs": [null, {"!": -0.5, ".": -1.25}], "text_offset": [0, 2]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        })
    );
    let plain = Completion::new(
        &meta(),
        "x".into(),
        None,
        FinishReason::Stop,
        Usage::new(1, 1),
    );
    let plain = serde_json::to_value(&plain).unwrap();
    assert_eq!(plain["choices"][0]["logprobs"], Value::Null);
    assert_eq!(plain["choices"][0]["finish_reason"], "stop");
}

#[test]
fn top_logprobs_keep_rank_order() {
    let top = TopLogprobs(vec![("b".into(), -0.1), ("a".into(), -2.0)]);
    assert_eq!(
        serde_json::to_string(&top).unwrap(),
        r#"{"b":-0.1,"a":-2.0}"#
    );
}

#[test]
fn completion_chunks_json() {
    let chunk = CompletionChunk::text(&meta(), "Hel".into(), None, None);
    assert_eq!(
        serde_json::to_value(&chunk).unwrap(),
        json!({"id": "cmpl-42", "object": "text_completion", "created": 1_700_000_000,
               "model": "mixtral",
               "choices": [{"index": 0, "text": "Hel", "logprobs": null,
                            "finish_reason": null, "stop_reason": null}]})
    );
    let last = CompletionChunk::text(&meta(), String::new(), None, Some(FinishReason::Stop));
    assert_eq!(
        serde_json::to_value(&last).unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let usage = CompletionChunk::usage(&meta(), Usage::new(3, 4));
    assert_eq!(
        serde_json::to_value(&usage).unwrap(),
        json!({"id": "cmpl-42", "object": "text_completion", "created": 1_700_000_000,
               "model": "mixtral", "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    );
}

#[test]
fn chat_completion_json() {
    let top = ChatTopLogprob {
        token: "Hi".into(),
        logprob: -0.25,
        bytes: b"Hi".to_vec(),
    };
    let logprobs = ChatLogprobs {
        content: vec![ChatTokenLogprob {
            token: "Hi".into(),
            logprob: -0.25,
            bytes: b"Hi".to_vec(),
            top_logprobs: vec![top],
        }],
    };
    let completion = ChatCompletion::new(
        &meta(),
        "Hi".into(),
        Some(logprobs),
        FinishReason::Stop,
        Usage::new(5, 1),
    );
    assert_eq!(
        serde_json::to_value(&completion).unwrap(),
        json!({
            "id": "chatcmpl-42", "object": "chat.completion", "created": 1_700_000_000,
            "model": "mixtral",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "logprobs": {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                    "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]}]},
                "finish_reason": "stop", "stop_reason": null,
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        })
    );
}

#[test]
fn chat_chunks_json() {
    let head = |choices: Value| {
        json!({"id": "chatcmpl-42", "object": "chat.completion.chunk",
               "created": 1_700_000_000, "model": "mixtral", "choices": choices})
    };
    let first = ChatCompletionChunk::delta(&meta(), Delta::assistant(), None, None);
    assert_eq!(
        serde_json::to_value(&first).unwrap(),
        head(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                     "logprobs": null, "finish_reason": null, "stop_reason": null}])
        )
    );
    let text = ChatCompletionChunk::delta(&meta(), Delta::text("Hi".into()), None, None);
    assert_eq!(
        serde_json::to_value(&text).unwrap(),
        head(
            json!([{"index": 0, "delta": {"content": "Hi"}, "logprobs": null,
                     "finish_reason": null, "stop_reason": null}])
        )
    );
    let last =
        ChatCompletionChunk::delta(&meta(), Delta::default(), None, Some(FinishReason::Length));
    assert_eq!(
        serde_json::to_value(&last).unwrap(),
        head(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length", "stop_reason": null}])
        )
    );
    let mut usage = head(json!([]));
    usage["usage"] = json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3});
    assert_eq!(
        serde_json::to_value(ChatCompletionChunk::usage(&meta(), Usage::new(1, 2))).unwrap(),
        usage
    );
}

#[test]
fn model_list_json() {
    let list = ModelList::new(vec![ModelCard::new("mixtral".into(), 1_700_000_000, 32768)]);
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        json!({"object": "list", "data": [{"id": "mixtral", "object": "model",
               "created": 1_700_000_000, "owned_by": "moe-cluster", "max_model_len": 32768}]})
    );
}

#[test]
fn sse_framing() {
    let chunk = CompletionChunk::usage(&meta(), Usage::new(1, 1));
    let event = sse_event(&chunk);
    let json = event
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .expect("framed as one data line and a blank line");
    assert!(!json.contains('\n'));
    assert_eq!(
        serde_json::from_str::<Value>(json).unwrap(),
        serde_json::to_value(&chunk).unwrap()
    );
    assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    let unencodable = BTreeMap::from([((1u8, 2u8), 3u8)]);
    let event = sse_event(&unencodable);
    let json: Value = serde_json::from_str(event.trim_start_matches("data: ").trim_end()).unwrap();
    assert_eq!(json["error"]["type"], "InternalServerError");
}

#[test]
fn error_documents_and_statuses() {
    let error = ApiError::bad_request("temperature", "too hot");
    assert_eq!(
        error.to_json(),
        json!({"error": {"message": "too hot", "type": "BadRequestError",
                         "param": "temperature", "code": null}})
    );
    assert_eq!(error.to_string(), "too hot");
    let error = ApiError::not_found_model("gpt-4");
    assert_eq!(error.status(), 404);
    assert_eq!(
        error.to_json(),
        json!({"error": {"message": "The model `gpt-4` does not exist.",
                         "type": "NotFoundError", "param": "model",
                         "code": "model_not_found"}})
    );
    let error = ApiError::unauthorized();
    assert_eq!(error.status(), 401);
    assert_eq!(
        error.to_json(),
        json!({"error": {"message": "Incorrect API key provided.",
                         "type": "AuthenticationError", "param": null,
                         "code": "invalid_api_key"}})
    );
    let error = ApiError::overloaded(2);
    assert_eq!((error.status(), error.retry_after_secs), (503, Some(2)));
    assert_eq!(error.to_json()["error"]["type"], "ServiceUnavailableError");
    let error = ApiError::payload_too_large(1 << 20);
    assert_eq!(error.status(), 413);
    assert_eq!(error.to_json()["error"]["type"], "PayloadTooLargeError");
    assert!(error.message.contains("1048576 bytes"));
    let error = ApiError::internal("boom");
    assert_eq!(
        (error.status(), error.kind.as_str()),
        (500, "InternalServerError")
    );
    assert_eq!(ApiError::malformed_body("x").param, None);
}

#[test]
fn a_failed_step_keeps_its_kind_to_the_status() {
    use moe_model::{ModelError, RoutedError};
    let status = |e: ModelError| {
        let error = ApiError::from_step(&e);
        (error.status(), error.retry_after_secs)
    };
    let gone = RoutedError::Unavailable("layer 0 expert 3: no replica could serve it".into());
    assert_eq!(status(ModelError::RoutedExperts(gone)), (503, Some(1)));
    let bug = RoutedError::Internal("expert node node-0: a malformed reply".into());
    assert_eq!(status(ModelError::RoutedExperts(bug)), (500, None));
    assert_eq!(
        status(ModelError::KvCacheFull { bytes: 1024 }),
        (503, Some(1))
    );
    let overflow = ModelError::ContextOverflow { len: 9, max: 8 };
    assert_eq!(status(overflow), (400, None));
    assert_eq!(status(ModelError::InvalidArgument("x".into())), (500, None));
}

#[test]
fn echo_with_max_tokens_zero_scores_the_prompt_alone() {
    let scoring = json!({"model": "m", "prompt": "hi", "echo": true, "max_tokens": 0,
                         "logprobs": 1});
    let v = completion(scoring).unwrap();
    assert_eq!(v.params.max_tokens, Some(0));
    assert!(v.params.echo);
    let without_echo = completion(json!({"model": "m", "prompt": "hi", "max_tokens": 0}));
    assert!(without_echo.unwrap_err().to_string().contains("at least 1"));
}
