//! The OpenAI-compatible HTTP API served on 127.0.0.1:0 (through the front door, as the binary
//! serves it) over a scripted engine, driven by a minimal HTTP/1.1 client: response documents and
//! stream chunks, probes, the model list, every refusal as OpenAI error JSON with its status, API
//! keys, the body limit, and a streaming client that goes away cancelling its job.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moe_gateway::api_keys::ApiKeys;
use moe_gateway::chat_template::{ChatTemplate, Message};
use moe_gateway::engine::{Engine, Event, Job, Token};
use moe_gateway::front_door::FrontDoor;
use moe_gateway::http::{HttpOptions, router};
use moe_gateway::openai::{ApiError, FinishReason, StopReason, Usage};
use moe_gateway::readiness::Readiness;
use moe_launch::http::{Head, Request, nonblocking};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};

const MODEL: &str = "test-moe";
const CONTEXT_LENGTH: usize = 32;
const MAX_TOKENS_LIMIT: usize = 16;
const CREATED: u64 = 1_700_000_000;
/// How long any one exchange with the server may take.
const DEADLINE: Duration = Duration::from_secs(10);

// --- The scripted engine ---------------------------------------------------------------------

/// How a job's events end.
#[derive(Clone)]
enum Ending {
    Finish,
    Fail(ApiError),
    /// No end: the job stays open until its receiver is dropped.
    Hang,
}

/// Tokenizes by splitting on whitespace (a word's id is its length, after `bos` when special
/// tokens are asked for), renders chat as `role: content` lines (or with its chat template,
/// when it has one), and answers every job with the scripted tokens (at most `max_tokens` of
/// them) and ending.
struct ScriptedEngine {
    reply: Vec<Token>,
    bos: Option<u32>,
    /// What the scripted ending says stopped it.
    stop_reason: Option<StopReason>,
    template: Option<ChatTemplate>,
    ending: Ending,
    refuse: bool,
    ready: AtomicBool,
    jobs: Mutex<Vec<Job>>,
    /// Jobs whose event receiver was dropped.
    dropped: Arc<AtomicUsize>,
}

impl ScriptedEngine {
    fn new() -> ScriptedEngine {
        ScriptedEngine {
            reply: vec![
                token(5, "Hello", -0.5),
                token(1, ",", -0.25),
                token(6, " world", -1.0),
                token(1, "!", -2.0),
            ],
            bos: None,
            stop_reason: None,
            template: None,
            ending: Ending::Finish,
            refuse: false,
            ready: AtomicBool::new(true),
            jobs: Mutex::new(Vec::new()),
            dropped: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn jobs(&self) -> Vec<Job> {
        self.jobs.lock().unwrap().clone()
    }
}

fn token(id: u32, text: &str, logprob: f32) -> Token {
    Token {
        id,
        text: text.to_owned(),
        logprob: Some(logprob),
        top: vec![(text.to_owned(), logprob), ("~".to_owned(), -4.0)],
    }
}

impl Engine for ScriptedEngine {
    fn model(&self) -> &str {
        MODEL
    }

    fn context_length(&self) -> usize {
        CONTEXT_LENGTH
    }

    fn max_tokens_limit(&self) -> usize {
        MAX_TOKENS_LIMIT
    }

    fn vocab_size(&self) -> usize {
        1000
    }

    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        let words = text.split_whitespace().map(|word| word.len() as u32);
        let bos = self.bos.filter(|_| add_special_tokens);
        Ok(bos.into_iter().chain(words).collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, ApiError> {
        Ok(ids
            .iter()
            .map(|&n| "x".repeat(n as usize))
            .collect::<Vec<_>>()
            .join(" "))
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String, ApiError> {
        if let Some(template) = &self.template {
            return template.render(messages, true).map_err(ApiError::from);
        }
        Ok(messages
            .iter()
            .map(|message| format!("{}: {}\n", message.role, message.content))
            .collect())
    }

    fn submit(&self, job: Job) -> Result<mpsc::Receiver<Event>, ApiError> {
        if self.refuse {
            return Err(ApiError::overloaded(2));
        }
        let tokens: Vec<Token> = self.reply.iter().take(job.max_tokens).cloned().collect();
        let reason = if tokens.len() == job.max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let usage = Usage::new(job.prompt.len(), tokens.len());
        let end = match &self.ending {
            Ending::Finish => Some(Event::Finished {
                reason,
                usage,
                stop_reason: self.stop_reason.clone(),
            }),
            Ending::Fail(error) => Some(Event::Failed(error.clone())),
            Ending::Hang => None,
        };
        // With echo and logprobs, the prompt scored first: token i as `<id>` at -i.
        let prompt = (job.params.echo && job.params.logprobs.is_some()).then(|| {
            let scored = job.prompt.iter().enumerate().map(|(i, &id)| {
                let text = format!("<{id}>");
                let logprob = (i > 0).then_some(-(i as f32));
                let top = logprob
                    .map(|lp| vec![(text.clone(), lp)])
                    .unwrap_or_default();
                Token {
                    id,
                    text,
                    logprob,
                    top,
                }
            });
            Event::Prompt(scored.collect())
        });
        self.jobs.lock().unwrap().push(job);
        let (sender, receiver) = mpsc::channel(8);
        let dropped = Arc::clone(&self.dropped);
        tokio::spawn(async move {
            let tokens = tokens.into_iter().map(Event::Token);
            for event in prompt.into_iter().chain(tokens).chain(end) {
                if sender.send(event).await.is_err() {
                    break;
                }
            }
            sender.closed().await;
            dropped.fetch_add(1, Ordering::SeqCst);
        });
        Ok(receiver)
    }

    fn readiness(&self) -> Readiness {
        let ready = self.ready.load(Ordering::SeqCst);
        Readiness {
            epoch: ready.then_some(1),
            experts: 1,
            missing: Vec::new(),
        }
    }
}

// --- The server and a minimal HTTP/1.1 client ------------------------------------------------

/// The API served on 127.0.0.1:0 until dropped.
struct Server {
    address: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

async fn serve(engine: &Arc<ScriptedEngine>, options: HttpOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let app = router(Arc::clone(engine) as Arc<dyn Engine>, options);
    tokio::spawn(FrontDoor::default().serve(listener, app, async {
        let _ = signal.await;
    }));
    Server {
        address,
        _shutdown: shutdown,
    }
}

fn options() -> HttpOptions {
    HttpOptions {
        created: CREATED,
        ..HttpOptions::default()
    }
}

/// A server over the default scripted engine.
async fn start() -> (Arc<ScriptedEngine>, Server) {
    let engine = Arc::new(ScriptedEngine::new());
    let server = serve(&engine, options()).await;
    (engine, server)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: Head,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!("the body is not JSON ({error}): {}", self.body);
        })
    }

    /// The `data:` payloads of a server-sent-event body.
    fn events(&self) -> Vec<&str> {
        self.body
            .split_terminator("\n\n")
            .map(|event| event.strip_prefix("data: ").expect("a data event"))
            .collect()
    }

    /// The JSON chunks of a stream, checking that it ends with `[DONE]`.
    fn chunks(&self) -> Vec<Value> {
        let events = self.events();
        let (done, chunks) = events.split_last().expect("a non-empty stream");
        assert_eq!(*done, "[DONE]");
        chunks
            .iter()
            .map(|chunk| serde_json::from_str(chunk).unwrap())
            .collect()
    }
}

/// `method path` with a JSON `body` and `headers`.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let request = Request::new(method, path).header("content-type", "application/json");
    let request = headers.iter().fold(request, |request, (name, value)| {
        request.header(name, value)
    });
    request.body(body)
}

/// Sends one request and reads the whole response (the connection closes after it).
async fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let request = request(method, path, headers, body);
    let response = nonblocking::call(&server.address.to_string(), &request, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("the server answered within the deadline: {e}"));
    Reply {
        status: response.status(),
        head: response.head,
        body: response.body,
    }
}

async fn post(server: &Server, path: &str, body: &Value) -> Reply {
    call(server, "POST", path, &[], &body.to_string()).await
}

async fn get(server: &Server, path: &str) -> Reply {
    call(server, "GET", path, &[], "").await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `body` without the fields that differ between requests, after checking their form.
fn without_id(mut body: Value, prefix: &str) -> Value {
    let object = body.as_object_mut().unwrap();
    let id = object.remove("id").unwrap();
    assert!(id.as_str().unwrap().starts_with(prefix), "{id}");
    assert!(object.remove("created").unwrap().as_u64().unwrap() > CREATED);
    body
}

fn error_json(kind: &str, message: &str, param: Value, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

// --- Completions -----------------------------------------------------------------------------

#[tokio::test]
async fn a_completion_has_the_generated_text_and_usage() {
    let (engine, server) = start().await;
    let reply = post(
        &server,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "say hello to me"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let expected = json!({
        "object": "text_completion",
        "model": MODEL,
        "choices": [{"index": 0, "text": "Hello, world!", "logprobs": null, "finish_reason": "stop", "stop_reason": null}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    });
    assert_eq!(without_id(reply.json(), "cmpl-"), expected);

    let jobs = engine.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].prompt, [3, 5, 2, 2]);
    assert_eq!(jobs[0].max_tokens, 16);
    assert_eq!(jobs[0].params.max_tokens, Some(16));
}

#[tokio::test]
async fn token_id_prompts_are_used_as_given_and_max_tokens_cuts_the_text() {
    let (engine, server) = start().await;
    let reply = post(
        &server,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": [7, 8, 9], "max_tokens": 2}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["choices"][0]["text"], "Hello,");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(engine.jobs()[0].prompt, [7, 8, 9]);
    assert_eq!(engine.jobs()[0].max_tokens, 2);
}

#[tokio::test]
async fn completion_logprobs_list_every_token_with_its_offset() {
    let (_engine, server) = start().await;
    let reply = post(
        &server,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "hi", "logprobs": 1}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = json!({
        "tokens": ["Hello", ",", " world", "!"],
        "token_logprobs": [-0.5, -0.25, -1.0, -2.0],
        "top_logprobs": [
            {"Hello": -0.5, "~": -4.0},
            {",": -0.25, "~": -4.0},
            {" world": -1.0, "~": -4.0},
            {"!": -2.0, "~": -4.0},
        ],
        "text_offset": [0, 5, 6, 12],
    });
    assert_eq!(reply.json()["choices"][0]["logprobs"], expected);
}

#[tokio::test]
async fn a_completions_alternatives_always_hold_the_chosen_token() {
    let unlikely = Token {
        id: 9,
        text: "odd".into(),
        logprob: Some(-3.0),
        top: vec![("Hello".into(), -0.5)],
    };
    let engine = Arc::new(ScriptedEngine {
        reply: vec![unlikely],
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let body = json!({"model": MODEL, "prompt": "hi", "logprobs": 1});
    let reply = post(&server, "/v1/completions", &body).await;
    let top = &reply.json()["choices"][0]["logprobs"]["top_logprobs"][0];
    assert_eq!(*top, json!({"Hello": -0.5, "odd": -3.0}), "{}", reply.body);
}

#[tokio::test]
async fn echo_prepends_the_prompt_and_with_logprobs_scores_it() {
    let (_engine, server) = start().await;
    let body = json!({"model": MODEL, "prompt": "Say: ", "echo": true});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["choices"][0]["text"], "Say: Hello, world!");

    let body = json!({"model": MODEL, "prompt": "Say: ", "echo": true, "stream": true});
    let chunks = post(&server, "/v1/completions", &body).await.chunks();
    let texts: Vec<&str> = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Say: ", "Hello", ",", " world", "!", ""]);

    // The prompt's tokens lead the logprobs, the first without a log-probability or
    // alternatives, as vLLM answers `echo` with `logprobs`.
    let body = json!({"model": MODEL, "prompt": "Say it: ", "echo": true, "logprobs": 1});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["text"], "Say it: Hello, world!");
    let expected = json!({
        "tokens": ["<3>", "<3>", "Hello", ",", " world", "!"],
        "token_logprobs": [null, -1.0, -0.5, -0.25, -1.0, -2.0],
        "top_logprobs": [
            null,
            {"<3>": -1.0},
            {"Hello": -0.5, "~": -4.0},
            {",": -0.25, "~": -4.0},
            {" world": -1.0, "~": -4.0},
            {"!": -2.0, "~": -4.0},
        ],
        "text_offset": [0, 3, 6, 11, 12, 18],
    });
    assert_eq!(choice["logprobs"], expected);

    // Streamed, the echoed prompt comes with its logprobs once they are known.
    let body =
        json!({"model": MODEL, "prompt": "Say it: ", "echo": true, "logprobs": 0, "stream": true});
    let chunks = post(&server, "/v1/completions", &body).await.chunks();
    assert_eq!(chunks[0]["choices"][0]["text"], "Say it: ");
    let first = &chunks[0]["choices"][0]["logprobs"];
    assert_eq!(first["token_logprobs"], json!([null, -1.0]), "{first}");
    assert_eq!(chunks[1]["choices"][0]["text"], "Hello");
    assert_eq!(chunks.len(), 6);
}

#[tokio::test]
async fn a_completion_stream_sends_each_token_then_the_end_usage_and_done() {
    let (_engine, server) = start().await;
    let whole = post(
        &server,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "say hello"}),
    )
    .await
    .json();
    let body = json!({
        "model": MODEL,
        "prompt": "say hello",
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );

    let chunks = reply.chunks();
    assert_eq!(chunks.len(), 6, "4 tokens, the end, the usage: {chunks:?}");
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["model"], MODEL);
    }
    let text: String = chunks[..5]
        .iter()
        .map(|chunk| chunk["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    for chunk in &chunks[..4] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        assert!(chunk.get("usage").is_none());
    }
    assert_eq!(
        chunks[4]["choices"][0],
        json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop", "stop_reason": null})
    );
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6})
    );
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event_before_done() {
    let engine = Arc::new(ScriptedEngine {
        ending: Ending::Fail(ApiError::internal("An expert node was lost.")),
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let body = json!({"model": MODEL, "prompt": "go", "stream": true});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let chunks = reply.chunks();
    assert_eq!(chunks.len(), 5);
    let error = error_json(
        "InternalServerError",
        "An expert node was lost.",
        Value::Null,
        Value::Null,
    );
    assert_eq!(chunks[4], error);

    let body = json!({"model": MODEL, "prompt": "go"});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), error);
}

// --- Chat completions ------------------------------------------------------------------------

fn chat_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
        ],
    })
}

#[tokio::test]
async fn a_chat_completion_is_the_assistant_message() {
    let (engine, server) = start().await;
    let reply = post(&server, "/v1/chat/completions", &chat_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = json!({
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world!"},
            "logprobs": null,
            "finish_reason": "stop",
            "stop_reason": null,
        }],
        "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10},
    });
    assert_eq!(without_id(reply.json(), "chatcmpl-"), expected);

    // "system: be brief\nuser: hi there\n", one id per word; no max_tokens: what fits.
    let jobs = engine.jobs();
    assert_eq!(jobs[0].prompt, [7, 2, 5, 5, 2, 5]);
    assert_eq!(jobs[0].max_tokens, MAX_TOKENS_LIMIT.min(CONTEXT_LENGTH - 6));
}

#[tokio::test]
async fn a_runaway_chat_template_is_refused_with_a_400() {
    for (source, says) in [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "budget",
        ),
        (
            "{{ messages|tojson(indent=1099511627776) }}",
            "indent 1099511627776",
        ),
    ] {
        let engine = Arc::new(ScriptedEngine {
            template: Some(ChatTemplate::from_source(source, None, None).unwrap()),
            ..ScriptedEngine::new()
        });
        let server = serve(&engine, options()).await;
        let reply = post(&server, "/v1/chat/completions", &chat_body()).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        let error = &reply.json()["error"];
        assert_eq!(error["param"], "messages");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
        assert!(engine.jobs().is_empty());
    }
}

#[tokio::test]
async fn chat_logprobs_give_each_token_with_its_alternatives() {
    let (_engine, server) = start().await;
    let mut body = chat_body();
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(1);
    body["max_tokens"] = json!(1);
    let reply = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let hello = b"Hello".to_vec();
    let expected = json!({"content": [{
        "token": "Hello",
        "logprob": -0.5,
        "bytes": hello,
        "top_logprobs": [
            {"token": "Hello", "logprob": -0.5, "bytes": hello},
            {"token": "~", "logprob": -4.0, "bytes": [126]},
        ],
    }]});
    assert_eq!(reply.json()["choices"][0]["logprobs"], expected);
}

#[tokio::test]
async fn a_chat_stream_sends_the_role_first_then_content_the_end_and_usage() {
    let (_engine, server) = start().await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );

    let chunks = reply.chunks();
    assert_eq!(
        chunks.len(),
        7,
        "role, 4 tokens, the end, the usage: {chunks:?}"
    );
    for chunk in &chunks {
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: Vec<&str> = chunks[1..5]
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, ["Hello", ",", " world", "!"]);
    assert_eq!(
        chunks[5]["choices"][0],
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop", "stop_reason": null})
    );
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["total_tokens"], 10);
}

#[tokio::test]
async fn a_streaming_client_that_goes_away_cancels_its_job() {
    let engine = Arc::new(ScriptedEngine {
        ending: Ending::Hang,
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    let request = request("POST", "/v1/chat/completions", &[], &body.to_string())
        .to_bytes(&server.address.to_string());

    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut received = Vec::new();
    let first_token = async {
        while find(&received, b"\"content\":\"!\"").is_none() {
            let mut buffer = [0; 4096];
            let read = stream.read(&mut buffer).await.unwrap();
            assert_ne!(read, 0, "the stream ended early");
            received.extend_from_slice(&buffer[..read]);
        }
    };
    timeout(DEADLINE, first_token)
        .await
        .expect("the tokens arrive within the deadline");
    assert_eq!(
        engine.dropped.load(Ordering::SeqCst),
        0,
        "the job is running"
    );
    drop(stream);

    let deadline = Instant::now() + DEADLINE;
    while engine.dropped.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the job was not cancelled");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_waiting_client_that_goes_away_cancels_its_job() {
    let engine = Arc::new(ScriptedEngine {
        ending: Ending::Hang,
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let request = request(
        "POST",
        "/v1/chat/completions",
        &[],
        &chat_body().to_string(),
    )
    .to_bytes(&server.address.to_string());
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(&request).await.unwrap();

    let deadline = Instant::now() + DEADLINE;
    while engine.jobs().is_empty() {
        assert!(Instant::now() < deadline, "the job was not submitted");
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        engine.dropped.load(Ordering::SeqCst),
        0,
        "the job is running"
    );
    drop(stream);
    while engine.dropped.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the job was not cancelled");
        sleep(Duration::from_millis(10)).await;
    }
}

// --- Models and probes -----------------------------------------------------------------------

#[tokio::test]
async fn the_model_list_names_the_served_model() {
    let (_engine, server) = start().await;
    let reply = get(&server, "/v1/models").await;
    assert_eq!(reply.status, 200);
    let expected = json!({"object": "list", "data": [{
        "id": MODEL,
        "object": "model",
        "created": CREATED,
        "owned_by": "moe-cluster",
        "max_model_len": CONTEXT_LENGTH,
    }]});
    assert_eq!(reply.json(), expected);
}

#[tokio::test]
async fn a_batch_of_prompts_and_n_give_a_choice_each_and_usage_counts_each_prompt_once() {
    let (engine, server) = start().await;
    let body = json!({"model": MODEL, "prompt": ["ab cd", "efg"], "n": 2, "max_tokens": 3,
                      "seed": 10});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    let choices = json["choices"].as_array().unwrap();
    let indexes: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert!(
        choices.iter().all(|c| c["text"] == "Hello, world"),
        "{json}"
    );
    // Prompts of 2 and 1 tokens, each once; 3 tokens for each of the four choices.
    assert_eq!(json["usage"]["prompt_tokens"], 3);
    assert_eq!(json["usage"]["completion_tokens"], 12);
    let jobs: Vec<(Vec<u32>, Option<u64>)> = engine
        .jobs()
        .iter()
        .map(|j| (j.prompt.clone(), j.params.seed))
        .collect();
    let expected = [
        (vec![2, 2], Some(10)),
        (vec![2, 2], Some(11)),
        (vec![3], Some(10)),
        (vec![3], Some(11)),
    ];
    assert_eq!(jobs, expected, "choice j of a prompt is seeded seed + j");

    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 3});
    let reply = post(&server, "/v1/chat/completions", &chat).await;
    let json = reply.json();
    let choices = json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{json}");
    assert_eq!(choices[2]["index"], 2);
    assert_eq!(
        json["usage"]["prompt_tokens"], 2,
        "the conversation once: {json}"
    );
    let streamed = json!({"model": MODEL, "prompt": "a", "n": 2, "stream": true});
    let refused = post(&server, "/v1/completions", &streamed).await;
    assert_eq!(
        (refused.status, refused.json()["error"]["param"].clone()),
        (400, json!("n"))
    );
}

#[tokio::test]
async fn what_stopped_a_completion_is_its_stop_reason() {
    let engine = Arc::new(ScriptedEngine {
        stop_reason: Some(StopReason::Text("END".into())),
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let body = json!({"model": MODEL, "prompt": "hi", "stop": ["END"]});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.json()["choices"][0]["stop_reason"], "END");
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "stream": true});
    let streamed = post(&server, "/v1/chat/completions", &chat).await;
    let chunks = streamed.chunks();
    let last = chunks.last().expect("a last chunk");
    assert_eq!(last["choices"][0]["stop_reason"], "END");
    assert_eq!(chunks[0]["choices"][0]["stop_reason"], Value::Null);
}

#[tokio::test]
async fn a_model_is_found_by_its_id_and_another_is_not() {
    let (_engine, server) = start().await;
    let reply = get(&server, &format!("/v1/models/{MODEL}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], MODEL);
    assert_eq!(reply.json()["max_model_len"], CONTEXT_LENGTH);
    let reply = get(&server, "/v1/models/org/other-model").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "model_not_found");
    assert!(reply.body.contains("org/other-model"), "{}", reply.body);
}

#[tokio::test]
async fn liveness_is_always_and_readiness_follows_the_engine() {
    let (engine, server) = start().await;
    assert_eq!(get(&server, "/health/live").await.status, 200);
    assert_eq!(get(&server, "/health/ready").await.status, 200);
    let health = get(&server, "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, ""));

    engine.ready.store(false, Ordering::SeqCst);
    assert_eq!(get(&server, "/health/live").await.status, 200);
    for probe in ["/health/ready", "/health"] {
        let reply = get(&server, probe).await;
        assert_eq!(reply.status, 503, "{probe}");
        assert_eq!(reply.json()["error"]["type"], "ServiceUnavailableError");
    }
    let version = get(&server, "/version").await;
    assert_eq!(version.status, 200);
    assert_eq!(version.json()["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn tokenize_and_detokenize_answer_in_vllms_shapes() {
    let engine = Arc::new(ScriptedEngine {
        bos: Some(1),
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let reply = post(
        &server,
        "/tokenize",
        &json!({"model": MODEL, "prompt": "ab cde"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = json!({"count": 3, "max_model_len": CONTEXT_LENGTH, "tokens": [1, 2, 3],
                          "token_strs": null});
    assert_eq!(reply.json(), expected);
    let plain = json!({"prompt": "ab cde", "add_special_tokens": false});
    assert_eq!(
        post(&server, "/tokenize", &plain).await.json()["tokens"],
        json!([2, 3])
    );
    // Messages are rendered as a chat completion renders them ("user: hi there\n").
    let chat = json!({"messages": [{"role": "user", "content": "hi there"}]});
    assert_eq!(
        post(&server, "/tokenize", &chat).await.json()["tokens"],
        json!([1, 5, 2, 5])
    );
    let strs = json!({"prompt": "a", "return_token_strs": true});
    let refused = post(&server, "/tokenize", &strs).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["param"], "return_token_strs");
    let other = post(
        &server,
        "/tokenize",
        &json!({"model": "gpt-4", "prompt": "a"}),
    )
    .await;
    assert_eq!(other.status, 404);

    let reply = post(&server, "/detokenize", &json!({"tokens": [2, 3]})).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"prompt": "xx xxx"}))
    );
    let out_of_range = post(&server, "/detokenize", &json!({"tokens": [1000]})).await;
    assert_eq!(out_of_range.status, 400);
    assert_eq!(out_of_range.json()["error"]["param"], "tokens");
}

#[tokio::test]
async fn a_requests_id_is_the_clients_x_request_id_or_a_new_one_and_is_echoed() {
    let (_engine, server) = start().await;
    let body = json!({"model": MODEL, "prompt": "hi", "max_tokens": 2}).to_string();
    let headers = [("x-request-id", "trace-42")];
    let reply = call(&server, "POST", "/v1/completions", &headers, &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    assert_eq!(reply.json()["id"], "cmpl-trace-42");
    let made = post(
        &server,
        "/v1/completions",
        &serde_json::from_str(&body).unwrap(),
    )
    .await;
    let id = made
        .header("x-request-id")
        .expect("an id is made")
        .to_string();
    assert_eq!(made.json()["id"], format!("cmpl-{id}"));
    let bad = [("x-request-id", "has space")];
    let reply = call(&server, "POST", "/v1/completions", &bad, &body).await;
    assert_ne!(reply.header("x-request-id"), Some("has space"));
    let refused = call(&server, "GET", "/nowhere", &headers, "").await;
    assert_eq!(
        refused.header("x-request-id"),
        Some("trace-42"),
        "errors carry it too"
    );
}

// --- Refusals --------------------------------------------------------------------------------

#[tokio::test]
async fn another_model_is_not_found() {
    let (engine, server) = start().await;
    let reply = post(
        &server,
        "/v1/completions",
        &json!({"model": "gpt-4", "prompt": "hi"}),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let expected = error_json(
        "NotFoundError",
        "The model `gpt-4` does not exist.",
        json!("model"),
        json!("model_not_found"),
    );
    assert_eq!(reply.json(), expected);
    assert!(engine.jobs().is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let (_engine, server) = start().await;
    let reply = call(&server, "POST", "/v1/chat/completions", &[], "{\"model\": ").await;
    assert_eq!(reply.status, 400);
    let body = reply.json();
    assert_eq!(body["error"]["type"], "BadRequestError");
    assert_eq!(body["error"]["param"], Value::Null);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The request body is not valid JSON"),
        "{message}"
    );
}

#[tokio::test]
async fn a_temperature_out_of_range_is_refused_by_name() {
    let (_engine, server) = start().await;
    let mut body = chat_body();
    body["temperature"] = json!(3);
    let reply = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 400);
    let expected = error_json(
        "BadRequestError",
        "temperature must be between 0 and 2, got 3.",
        json!("temperature"),
        Value::Null,
    );
    assert_eq!(reply.json(), expected);
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_gets_the_vllm_message() {
    let (engine, server) = start().await;
    let prompt = vec!["word"; 30].join(" ");
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 5});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 400);
    let message = "This model's maximum context length is 32 tokens. However, you requested \
                   35 tokens (30 in the messages, 5 in the completion). Please reduce the \
                   length of the messages or completion.";
    let expected = error_json("BadRequestError", message, json!("prompt"), Value::Null);
    assert_eq!(reply.json(), expected);
    assert!(engine.jobs().is_empty());
}

#[tokio::test]
async fn a_full_engine_answers_503_with_retry_after() {
    let engine = Arc::new(ScriptedEngine {
        refuse: true,
        ..ScriptedEngine::new()
    });
    let server = serve(&engine, options()).await;
    let reply = post(&server, "/v1/chat/completions", &chat_body()).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("2"));
    let expected = error_json(
        "ServiceUnavailableError",
        "The server is at capacity. Please retry after 2 seconds.",
        Value::Null,
        Value::Null,
    );
    assert_eq!(reply.json(), expected);
}

#[tokio::test]
async fn an_api_key_guards_the_api_but_not_the_probes() {
    let engine = Arc::new(ScriptedEngine::new());
    let options = HttpOptions {
        api_keys: ApiKeys::new(["sk-old", "sk-secret"]),
        ..options()
    };
    let server = serve(&engine, options).await;
    let unauthorized = error_json(
        "AuthenticationError",
        "Incorrect API key provided.",
        Value::Null,
        json!("invalid_api_key"),
    );
    for headers in [
        &[][..],
        &[("authorization", "Bearer sk-secreT")],
        &[("authorization", "Bearer sk-secret-and-more")],
        &[("authorization", "sk-secret")],
    ] {
        let reply = call(&server, "GET", "/v1/models", headers, "").await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.json(), unauthorized);
    }
    let body = chat_body().to_string();
    let reply = call(&server, "POST", "/v1/chat/completions", &[], &body).await;
    assert_eq!(reply.status, 401);
    assert!(engine.jobs().is_empty());

    let key = [("authorization", "Bearer sk-secret")];
    for valid in [&key, &[("authorization", "Bearer sk-old")]] {
        assert_eq!(
            call(&server, "GET", "/v1/models", valid, "").await.status,
            200
        );
    }
    let reply = call(&server, "POST", "/v1/chat/completions", &key, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(get(&server, "/health/live").await.status, 200);
    assert_eq!(get(&server, "/health/ready").await.status, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let engine = Arc::new(ScriptedEngine::new());
    let options = HttpOptions {
        max_body_bytes: 1024,
        ..options()
    };
    let server = serve(&engine, options).await;
    let body = json!({"model": MODEL, "prompt": "x".repeat(2000)});
    let reply = post(&server, "/v1/completions", &body).await;
    assert_eq!(reply.status, 413);
    let expected = error_json(
        "PayloadTooLargeError",
        "The request body is larger than the limit of 1024 bytes.",
        Value::Null,
        Value::Null,
    );
    assert_eq!(reply.json(), expected);
    assert!(engine.jobs().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_openai_errors() {
    let (_engine, server) = start().await;
    let reply = get(&server, "/v2/nothing").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let expected = error_json(
        "NotFoundError",
        "The route `GET /v2/nothing` does not exist.",
        Value::Null,
        Value::Null,
    );
    assert_eq!(reply.json(), expected);

    let reply = get(&server, "/v1/completions").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let expected = error_json(
        "MethodNotAllowedError",
        "The route `/v1/completions` does not allow GET.",
        Value::Null,
        Value::Null,
    );
    assert_eq!(reply.json(), expected);
}
