//! The OpenAI-compatible HTTP API over an [`Engine`]: `POST /v1/completions`,
//! `POST /v1/chat/completions` (both with server-sent-event streaming), `GET /v1/models` and
//! `GET /v1/models/{id}`; vLLM's `POST /tokenize`, `POST /detokenize`, `GET /health` (200 with
//! an empty body when ready) and `GET /version`; and the probes `GET /health/live` and
//! `GET /health/ready`. A request's `X-Request-Id` (up to 128 visible ASCII characters) becomes
//! its id (in the response ids and the logs), or one is made; either way the response carries it.
//!
//! Every refusal is OpenAI error JSON with its status (and `Retry-After` on overload); unknown
//! routes are 404 and wrong methods 405 in the same shape. With an API key configured, every
//! `/v1` path needs `Authorization: Bearer <key>`; the probes stay open. A client that goes away
//! cancels its job: the response (streaming) or the handler (non-streaming) owns the job's event
//! receiver, and dropping it cancels the job.
//!
//! Not here: request documents and their validation ([`crate::openai`]), tokenization and chat
//! templates (the engine's), binding ports, TLS and graceful drain (the binary's).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tracing::{Instrument, Span};

use crate::api_keys::ApiKeys;
use crate::chat_template::Message;
use crate::engine::{Engine, Event, Job, Token};
use crate::openai::{
    ApiError, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatLogprobs,
    ChatMessage, ChatTokenLogprob, ChatTopLogprob, Completion, CompletionChoice, CompletionChunk,
    CompletionLogprobs, CompletionRequest, Delta, DetokenizeRequest, DetokenizeResponse, ErrorKind,
    FinishReason, InputField, Limits, ModelCard, ModelList, Prompt, ResponseMeta, Role, SSE_DONE,
    SamplingParams, StopReason, TokenizeInput, TokenizeRequest, TokenizeResponse, TopLogprobs,
    Usage, Validated, check_context, sse_event,
};
use crate::readiness::Readiness;

/// The largest request body accepted unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// The log-probability written for an impossible token in chat logprobs, where JSON has no
/// `-Infinity` (vLLM's stand-in).
const LOGPROB_FLOOR: f32 = -9999.0;

/// How the HTTP API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// The keys a `/v1` request may present as `Authorization: Bearer <key>`; none leaves the
    /// API open.
    pub api_keys: ApiKeys,
    /// Larger request bodies are refused with a 413.
    pub max_body_bytes: usize,
    /// The model card's `created`, in Unix seconds.
    pub created: u64,
}

impl Default for HttpOptions {
    /// No API key, a 1 MiB body limit, and the model card created now.
    fn default() -> Self {
        Self {
            api_keys: ApiKeys::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            created: unix_now(),
        }
    }
}

/// The HTTP API serving `engine`.
pub fn router(engine: Arc<dyn Engine>, options: HttpOptions) -> Router {
    let max_body_bytes = options.max_body_bytes;
    let state = Arc::new(AppState {
        engine,
        options,
        ids: RequestIds::new(),
    });
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/tokenize", post(tokenize_text))
        .route("/detokenize", post(detokenize_ids))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready_probe))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), trace))
        .with_state(state)
}

/// What every handler shares.
struct AppState {
    engine: Arc<dyn Engine>,
    options: HttpOptions,
    ids: RequestIds,
}

impl AppState {
    fn limits(&self) -> Limits {
        Limits {
            max_tokens_limit: self.engine.max_tokens_limit(),
            context_length: self.engine.context_length(),
            vocab_size: self.engine.vocab_size(),
        }
    }

    /// The body, or a 413 past the limit.
    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::payload_too_large(self.options.max_body_bytes)
            }
            other => {
                ApiError::malformed_body(format!("The request body could not be read: {other}"))
            }
        })
    }

    fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.engine.model() {
            Ok(())
        } else {
            Err(ApiError::not_found_model(model))
        }
    }

    /// [`Self::check_model`] for a request where the model is optional (vLLM's `/tokenize`).
    fn check_given_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        model.map_or(Ok(()), |m| self.check_model(m))
    }

    /// Checks the prompt against the context and starts the job.
    fn submit(
        &self,
        input: InputField,
        prompt: Vec<u32>,
        params: &SamplingParams,
    ) -> Result<mpsc::Receiver<Event>, ApiError> {
        if prompt.is_empty() {
            let param = match input {
                InputField::Prompt => "prompt",
                InputField::Messages => "messages",
            };
            return Err(ApiError::bad_request(
                param,
                "The prompt must not be empty.",
            ));
        }
        let max_tokens = check_context(input, prompt.len(), params.max_tokens, &self.limits())?;
        tracing::debug!(
            prompt_tokens = prompt.len(),
            max_tokens,
            stream = params.stream,
            "job submitted"
        );
        self.engine.submit(Job {
            prompt,
            max_tokens,
            params: SamplingParams {
                max_tokens: Some(max_tokens),
                ..params.clone()
            },
        })
    }

    fn meta(&self, id: RequestId) -> ResponseMeta {
        ResponseMeta {
            request_id: id.0,
            created: unix_now(),
            model: self.engine.model().to_owned(),
        }
    }
}

/// A request's id, unique in this process and across restarts: the router's start time and a
/// counter, in hex.
#[derive(Debug, Clone)]
struct RequestId(String);

struct RequestIds {
    start_millis: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let start_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        Self {
            start_millis,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{:011x}{n:06x}", self.start_millis))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

// --- Middleware ------------------------------------------------------------------------------

/// The header a request's id comes in and goes back in.
const REQUEST_ID: &str = "x-request-id";

/// The id a client gave in `X-Request-Id`, when it is 1 to 128 visible ASCII characters.
fn client_request_id(request: &Request) -> Option<RequestId> {
    let value = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let fits = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    fits.then(|| RequestId(value.to_string()))
}

/// Gives the request its id (the client's `X-Request-Id`, or a new one), runs it in a span
/// naming the method, route and id, and sends the id back in the response's `X-Request-Id`.
async fn trace(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let id = client_request_id(&request).unwrap_or_else(|| state.ids.next());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        route,
        request_id = %id.0,
    );
    let echoed = HeaderValue::from_str(&id.0).ok();
    request.extensions_mut().insert(id);
    async move {
        let mut response = next.run(request).await;
        tracing::info!(status = response.status().as_u16(), "answered");
        if let Some(echoed) = echoed {
            response.headers_mut().insert(REQUEST_ID, echoed);
        }
        response
    }
    .instrument(span)
    .await
}

/// Refuses `/v1` requests without one of the configured API keys.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let guarded = path == "/v1" || path.starts_with("/v1/");
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if guarded && !state.options.api_keys.admits(authorization) {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

// --- Errors ----------------------------------------------------------------------------------

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.to_json())).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError {
        kind: ErrorKind::NotFound,
        message: format!("The route `{method} {}` does not exist.", uri.path()),
        param: None,
        code: None,
        retry_after_secs: None,
    }
}

/// 405 in OpenAI's error shape; [`ErrorKind`] has no 405, so the `"type"` is set here.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("The route `{}` does not allow {method}.", uri.path());
    let mut body = ApiError::malformed_body(message).to_json();
    body["error"]["type"] = "MethodNotAllowedError".into();
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// A job's events stopped before its end.
fn ended_early() -> ApiError {
    ApiError::internal("The generation ended without a result.")
}

// --- Probes and models -----------------------------------------------------------------------

async fn live() -> StatusCode {
    StatusCode::OK
}

/// 200 with the readiness details when every expert has a serving node; otherwise 503 with an
/// OpenAI error whose message says what is missing and why, and the details beside it.
async fn ready_probe(State(state): State<Arc<AppState>>) -> Response {
    let readiness = state.engine.readiness();
    if readiness.is_ready() {
        return (StatusCode::OK, Json(readiness.to_json())).into_response();
    }
    not_ready(&readiness)
}

/// The 503 of a gateway that cannot serve: an OpenAI error saying what is missing and why, and
/// the readiness details beside it.
fn not_ready(readiness: &Readiness) -> Response {
    let message = format!("Not ready: {}", readiness.summary());
    let mut body = ApiError::unavailable(message).to_json();
    body["readiness"] = readiness.to_json();
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = state.engine.metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// vLLM's `/health`: 200 with an empty body when the gateway can serve; otherwise what
/// `/health/ready` answers.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let readiness = state.engine.readiness();
    if readiness.is_ready() {
        return StatusCode::OK.into_response();
    }
    not_ready(&readiness)
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION")}))
}

impl AppState {
    fn card(&self) -> ModelCard {
        let engine = &self.engine;
        let (name, context) = (engine.model().to_owned(), engine.context_length());
        ModelCard::new(name, self.options.created, context)
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList::new(vec![state.card()]))
}

/// `/v1/models/{id}`: the served model's card, or a 404 naming the model asked for.
async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state.check_model(&id)?;
    Ok(Json(state.card()))
}

/// vLLM's `/tokenize`: a prompt, or chat messages as a chat completion renders them, to ids.
async fn tokenize_text(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let request = TokenizeRequest::from_json(&state.body(body)?)?;
    state.check_given_model(request.model.as_deref())?;
    let (input, special) = request.validate()?;
    let tokens = off_runtime(&state.engine, move |engine| match input {
        TokenizeInput::Prompt(text) => engine.tokenize(&text, special),
        TokenizeInput::Messages(messages) => {
            let messages: Vec<Message> = messages.iter().map(template_message).collect();
            engine.tokenize(&engine.chat_prompt(&messages)?, special)
        }
    })
    .await?;
    let max_model_len = state.engine.context_length();
    Ok(Json(TokenizeResponse::new(tokens, max_model_len)))
}

/// vLLM's `/detokenize`: token ids to text.
async fn detokenize_ids(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let request = DetokenizeRequest::from_json(&state.body(body)?)?;
    state.check_given_model(request.model.as_deref())?;
    let ids = request.validate(state.engine.vocab_size())?;
    let prompt = off_runtime(&state.engine, move |engine| engine.detokenize(&ids)).await?;
    Ok(Json(DetokenizeResponse { prompt }))
}

// --- Completions -----------------------------------------------------------------------------

async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = CompletionRequest::from_json(&state.body(body)?)?;
    state.check_model(&request.model)?;
    let Validated { input, params, .. } = request.validate(&state.limits())?;
    let meta = state.meta(id);
    if input.len() > 1 || params.n > 1 {
        return several_completions(&state, &meta, input, &params).await;
    }
    let input = input.into_iter().next().expect("one prompt, validated");
    let (prompt, echo) = completion_prompt(&state.engine, input, &params).await?;
    let events = state.submit(InputField::Prompt, prompt, &params)?;
    let logprobs = params.logprobs.is_some();
    if params.stream {
        // With logprobs the echoed prompt goes out with its tokens' log-probabilities, once the
        // prefill has scored them.
        let opening = (!echo.is_empty() && !logprobs)
            .then(|| sse_event(&CompletionChunk::text(&meta, echo.clone(), None, None)));
        let frames = CompletionFrames {
            offset: echo.chars().count(),
            echo: logprobs.then_some(echo),
            meta,
            logprobs,
            include_usage: params.include_usage,
        };
        return Ok(event_stream(events, opening, frames));
    }
    let generated = collect(events).await?;
    let usage = generated.usage;
    let choice = completion_choice(0, echo, generated, logprobs);
    Ok(Json(Completion::of(&meta, vec![choice], usage)).into_response())
}

/// A batch of prompts, or `n` choices of each: every choice its own job (choice `j` of a prompt
/// sampled with `seed + j`), all submitted before any is awaited, answered together. The
/// usage counts each prompt once and every choice's tokens, as vLLM counts them.
async fn several_completions(
    state: &AppState,
    meta: &ResponseMeta,
    prompts: Vec<Prompt>,
    params: &SamplingParams,
) -> Result<Response, ApiError> {
    let mut jobs = Vec::new();
    let mut prompt_tokens = 0;
    for prompt in prompts {
        let (ids, echo) = completion_prompt(&state.engine, prompt, params).await?;
        prompt_tokens += ids.len();
        for choice in choice_params(params) {
            let events = state.submit(InputField::Prompt, ids.clone(), &choice)?;
            jobs.push((echo.clone(), events));
        }
    }
    let logprobs = params.logprobs.is_some();
    let (choices, usage) = gather(jobs, prompt_tokens, |index, echo, generated| {
        completion_choice(index, echo, generated, logprobs)
    })
    .await?;
    Ok(Json(Completion::of(meta, choices, usage)).into_response())
}

/// Awaits every job of `jobs` in order, each with what its choice needs beside its result, and
/// builds choice `i` from the `i`th with `choice`; the usage counts `prompt_tokens` once and
/// every choice's tokens.
async fn gather<T, C>(
    jobs: Vec<(T, mpsc::Receiver<Event>)>,
    prompt_tokens: usize,
    choice: impl Fn(u32, T, Generated) -> C,
) -> Result<(Vec<C>, Usage), ApiError> {
    let (mut choices, mut completion_tokens) = (Vec::new(), 0);
    for (index, (extra, events)) in jobs.into_iter().enumerate() {
        let generated = collect(events).await?;
        completion_tokens += generated.usage.completion_tokens;
        choices.push(choice(index as u32, extra, generated));
    }
    Ok((choices, Usage::new(prompt_tokens, completion_tokens)))
}

/// The sampling parameters of each of `params.n` choices: choice `j` seeded with `seed + j`
/// (0 + j without a seed), so that they differ when they sample.
fn choice_params(params: &SamplingParams) -> impl Iterator<Item = SamplingParams> + '_ {
    (0..params.n as u64).map(|j| SamplingParams {
        seed: Some(params.seed.unwrap_or(0).wrapping_add(j)),
        ..params.clone()
    })
}

/// One completion choice from its job's result, after the echoed prompt `echo`.
fn completion_choice(
    index: u32,
    echo: String,
    generated: Generated,
    logprobs: bool,
) -> CompletionChoice {
    let Generated {
        prompt,
        tokens,
        reason,
        stop_reason,
        ..
    } = generated;
    let logprobs = logprobs.then(|| {
        let scored: Vec<Token> = prompt.into_iter().chain(tokens.iter().cloned()).collect();
        let offset = if scored.len() > tokens.len() {
            0
        } else {
            echo.chars().count()
        };
        completion_logprobs(&scored, offset)
    });
    CompletionChoice {
        index,
        text: echo + &concatenated(&tokens),
        logprobs,
        finish_reason: Some(reason),
        stop_reason,
    }
}

/// The prompt's token ids, and with `echo` its text (empty otherwise).
async fn completion_prompt(
    engine: &Arc<dyn Engine>,
    input: Prompt,
    params: &SamplingParams,
) -> Result<(Vec<u32>, String), ApiError> {
    match input {
        Prompt::Text(text) if params.echo => {
            let ids = tokenize(engine, text.clone()).await?;
            Ok((ids, text))
        }
        Prompt::Text(text) => Ok((tokenize(engine, text).await?, String::new())),
        Prompt::Tokens(_) if params.echo => Err(ApiError::bad_request(
            "echo",
            "echo is supported for text prompts only.",
        )),
        Prompt::Tokens(ids) => Ok((ids, String::new())),
    }
}

async fn tokenize(engine: &Arc<dyn Engine>, text: String) -> Result<Vec<u32>, ApiError> {
    off_runtime(engine, move |engine| engine.tokenize(&text, true)).await
}

/// Runs CPU-bound engine work (templating, tokenizing) on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    engine: &Arc<dyn Engine>,
    work: impl FnOnce(&dyn Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || work(engine.as_ref()))
        .await
        .map_err(|error| ApiError::internal(format!("Preparing the prompt failed: {error}")))?
}

/// `tokens`' log-probabilities, their text offsets counted from `offset` characters (a token
/// without one, the prompt's first, has no alternatives either).
fn completion_logprobs(tokens: &[Token], mut offset: usize) -> CompletionLogprobs {
    let mut logprobs = CompletionLogprobs::default();
    for token in tokens {
        logprobs.tokens.push(token.text.clone());
        logprobs.token_logprobs.push(token.logprob);
        // The token itself is always among its alternatives, as vLLM answers: one more than
        // asked for when it is not among the most likely.
        let top = token.logprob.map(|lp| {
            let mut top = token.top.clone();
            if !top.iter().any(|(text, _)| *text == token.text) {
                top.push((token.text.clone(), lp));
            }
            TopLogprobs(top)
        });
        logprobs.top_logprobs.push(top);
        logprobs.text_offset.push(offset);
        offset += token.text.chars().count();
    }
    logprobs
}

// --- Chat completions ------------------------------------------------------------------------

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = ChatCompletionRequest::from_json(&state.body(body)?)?;
    state.check_model(&request.model)?;
    let Validated { input, params, .. } = request.validate(&state.limits())?;
    let messages: Vec<Message> = input.iter().map(template_message).collect();
    let prompt = off_runtime(&state.engine, move |engine| {
        engine.tokenize(&engine.chat_prompt(&messages)?, true)
    })
    .await?;
    let meta = state.meta(id);
    let logprobs = params.logprobs.is_some();
    if params.n > 1 {
        return several_chat_choices(&state, &meta, prompt, &params).await;
    }
    let events = state.submit(InputField::Messages, prompt, &params)?;
    if params.stream {
        let opening = ChatCompletionChunk::delta(&meta, Delta::assistant(), None, None);
        let opening = Some(sse_event(&opening));
        let frames = ChatFrames {
            meta,
            logprobs,
            include_usage: params.include_usage,
        };
        return Ok(event_stream(events, opening, frames));
    }
    let generated = collect(events).await?;
    let usage = generated.usage;
    let choice = chat_choice(0, generated, logprobs);
    Ok(Json(ChatCompletion::of(&meta, vec![choice], usage)).into_response())
}

/// `n` choices of one conversation, each its own job seeded as [`choice_params`] says,
/// answered together; the usage counts the prompt once.
async fn several_chat_choices(
    state: &AppState,
    meta: &ResponseMeta,
    prompt: Vec<u32>,
    params: &SamplingParams,
) -> Result<Response, ApiError> {
    let prompt_tokens = prompt.len();
    let jobs = choice_params(params)
        .map(|choice| state.submit(InputField::Messages, prompt.clone(), &choice))
        .map(|events| events.map(|events| ((), events)))
        .collect::<Result<Vec<_>, _>>()?;
    let logprobs = params.logprobs.is_some();
    let (choices, usage) = gather(jobs, prompt_tokens, |index, (), generated| {
        chat_choice(index, generated, logprobs)
    })
    .await?;
    Ok(Json(ChatCompletion::of(meta, choices, usage)).into_response())
}

/// One chat choice from its job's result.
fn chat_choice(index: u32, generated: Generated, logprobs: bool) -> ChatChoice {
    let Generated {
        tokens,
        reason,
        stop_reason,
        ..
    } = generated;
    let logprobs = logprobs.then(|| ChatLogprobs {
        content: tokens.iter().map(chat_logprob).collect(),
    });
    ChatChoice::new(index, concatenated(&tokens), logprobs, reason).stopped_by(stop_reason)
}

fn template_message(message: &ChatMessage) -> Message {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    Message::new(role, message.content.clone())
}

fn chat_logprob(token: &Token) -> ChatTokenLogprob {
    let top_logprobs = token
        .top
        .iter()
        .map(|(text, logprob)| ChatTopLogprob {
            token: text.clone(),
            logprob: logprob.max(LOGPROB_FLOOR),
            bytes: text.as_bytes().to_vec(),
        })
        .collect();
    ChatTokenLogprob {
        token: token.text.clone(),
        logprob: token.logprob.unwrap_or(LOGPROB_FLOOR).max(LOGPROB_FLOOR),
        bytes: token.text.as_bytes().to_vec(),
        top_logprobs,
    }
}

// --- Non-streaming ---------------------------------------------------------------------------

/// A finished job's tokens.
struct Generated {
    /// The scored prompt, with `echo` and `logprobs`.
    prompt: Vec<Token>,
    tokens: Vec<Token>,
    reason: FinishReason,
    usage: Usage,
    stop_reason: Option<StopReason>,
}

/// Waits for a job's end; a failed job is its error.
async fn collect(mut events: mpsc::Receiver<Event>) -> Result<Generated, ApiError> {
    let (mut prompt, mut tokens) = (Vec::new(), Vec::new());
    loop {
        match events.recv().await {
            Some(Event::Prompt(scored)) => prompt = scored,
            Some(Event::Token(token)) => tokens.push(token),
            Some(Event::Finished {
                reason,
                usage,
                stop_reason,
            }) => {
                return Ok(Generated {
                    prompt,
                    tokens,
                    reason,
                    usage,
                    stop_reason,
                });
            }
            Some(Event::Failed(error)) => return Err(error),
            None => return Err(ended_early()),
        }
    }
}

fn concatenated(tokens: &[Token]) -> String {
    tokens.iter().map(|token| token.text.as_str()).collect()
}

// --- Streaming -------------------------------------------------------------------------------

/// How one endpoint writes a job's events as server-sent events.
trait Frames: Send + Unpin + 'static {
    /// The event for the scored prompt (empty: none).
    fn prompt(&mut self, _tokens: Vec<Token>) -> String {
        String::new()
    }
    /// The event for one new token.
    fn token(&mut self, token: Token) -> String;
    /// The events that end a finished job (without `[DONE]`).
    fn finished(&mut self, reason: FinishReason, usage: Usage, stop: Option<StopReason>) -> String;
}

struct CompletionFrames {
    meta: ResponseMeta,
    /// The prompt's text, sent with its tokens' log-probabilities when they come.
    echo: Option<String>,
    logprobs: bool,
    /// Characters streamed so far, the offset of the next token's text.
    offset: usize,
    include_usage: bool,
}

impl Frames for CompletionFrames {
    fn prompt(&mut self, tokens: Vec<Token>) -> String {
        let Some(echo) = self.echo.take() else {
            return String::new();
        };
        let logprobs = completion_logprobs(&tokens, 0);
        sse_event(&CompletionChunk::text(
            &self.meta,
            echo,
            Some(logprobs),
            None,
        ))
    }

    fn token(&mut self, token: Token) -> String {
        let logprobs = self
            .logprobs
            .then(|| completion_logprobs(std::slice::from_ref(&token), self.offset));
        self.offset += token.text.chars().count();
        sse_event(&CompletionChunk::text(
            &self.meta, token.text, logprobs, None,
        ))
    }

    fn finished(&mut self, reason: FinishReason, usage: Usage, stop: Option<StopReason>) -> String {
        let last = CompletionChunk::text(&self.meta, String::new(), None, Some(reason));
        let last = last.stopped_by(stop);
        let usage = self
            .include_usage
            .then(|| sse_event(&CompletionChunk::usage(&self.meta, usage)));
        sse_event(&last) + usage.as_deref().unwrap_or_default()
    }
}

struct ChatFrames {
    meta: ResponseMeta,
    logprobs: bool,
    include_usage: bool,
}

impl Frames for ChatFrames {
    fn token(&mut self, token: Token) -> String {
        let logprobs = self.logprobs.then(|| ChatLogprobs {
            content: vec![chat_logprob(&token)],
        });
        let delta = Delta::text(token.text);
        sse_event(&ChatCompletionChunk::delta(
            &self.meta, delta, logprobs, None,
        ))
    }

    fn finished(&mut self, reason: FinishReason, usage: Usage, stop: Option<StopReason>) -> String {
        let last = ChatCompletionChunk::delta(&self.meta, Delta::default(), None, Some(reason));
        let last = last.stopped_by(stop);
        let usage = self
            .include_usage
            .then(|| sse_event(&ChatCompletionChunk::usage(&self.meta, usage)));
        sse_event(&last) + usage.as_deref().unwrap_or_default()
    }
}

/// A streaming response: `opening`, one event per token, the end (or the error as an event),
/// then `[DONE]`.
fn event_stream(
    events: mpsc::Receiver<Event>,
    opening: Option<String>,
    frames: impl Frames,
) -> Response {
    let stream = EventStream {
        opening,
        events: Some(events),
        frames,
        span: Span::current(),
    };
    let headers = [
        (CONTENT_TYPE, "text/event-stream; charset=utf-8"),
        (CACHE_CONTROL, "no-cache"),
    ];
    (headers, Body::from_stream(stream)).into_response()
}

/// A job's events as server-sent events. It owns the job's receiver: when the client goes away
/// the response body, and with it the receiver, is dropped, which cancels the job.
struct EventStream<F> {
    opening: Option<String>,
    /// `None` once the job ended.
    events: Option<mpsc::Receiver<Event>>,
    frames: F,
    span: Span,
}

impl<F: Frames> Stream for EventStream<F> {
    type Item = Result<String, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        if let Some(opening) = this.opening.take() {
            return Poll::Ready(Some(Ok(opening)));
        }
        let Some(events) = &mut this.events else {
            return Poll::Ready(None);
        };
        let last = match ready!(events.poll_recv(cx)) {
            Some(Event::Prompt(tokens)) => {
                return Poll::Ready(Some(Ok(this.frames.prompt(tokens))));
            }
            Some(Event::Token(token)) => return Poll::Ready(Some(Ok(this.frames.token(token)))),
            Some(Event::Finished {
                reason,
                usage,
                stop_reason,
            }) => this.frames.finished(reason, usage, stop_reason),
            Some(Event::Failed(error)) => sse_event(&error.to_json()),
            None => sse_event(&ended_early().to_json()),
        };
        this.events = None;
        tracing::debug!("stream ended");
        Poll::Ready(Some(Ok(last + SSE_DONE)))
    }
}
