//! `moe.gateway.v1.GatewayService`: generation for other services over gRPC. A request is read as
//! the equivalent `POST /v1/completions` body, so it gets exactly the HTTP API's validation and
//! limits; tokens stream back as they are generated, and refusals are gRPC statuses mapped from
//! the API's error classes. A client that cancels its call cancels its sequence.

use std::sync::Arc;

use moe_proto::gateway::gateway_service_server::GatewayService;
use moe_proto::gateway::{
    Finished, GenerateRequest, GenerateResponse, PromptTokens, Token, Usage, generate_request,
    generate_response,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, Event, Job};
use crate::openai::{
    ApiError, CompletionRequest, ErrorKind, FinishReason, InputField, Limits, Prompt, check_context,
};

/// The gRPC face of an engine.
pub struct GrpcApi {
    pub engine: Arc<dyn Engine>,
}

/// The gRPC status for an API error (with `retry-after` metadata when it carries one).
pub fn status(e: ApiError) -> Status {
    let mut status = match e.kind {
        ErrorKind::BadRequest | ErrorKind::PayloadTooLarge => Status::invalid_argument(e.message),
        ErrorKind::NotFound => Status::not_found(e.message),
        ErrorKind::Authentication => Status::unauthenticated(e.message),
        ErrorKind::RequestTimeout => Status::deadline_exceeded(e.message),
        ErrorKind::ServiceUnavailable if e.retry_after_secs.is_some() => {
            Status::resource_exhausted(e.message)
        }
        ErrorKind::ServiceUnavailable => Status::unavailable(e.message),
        ErrorKind::Internal => Status::internal(e.message),
    };
    if let Some(seconds) = e.retry_after_secs
        && let Ok(value) = seconds.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// The `/v1/completions` body equivalent to `req`.
fn completion_body(req: &GenerateRequest) -> Value {
    let prompt = match &req.prompt {
        Some(generate_request::Prompt::Text(text)) => json!(text),
        Some(generate_request::Prompt::TokenIds(ids)) => json!(ids.ids),
        None => Value::Null,
    };
    let mut body = Map::from_iter([
        ("model".to_string(), json!(req.model)),
        ("prompt".to_string(), prompt),
    ]);
    if req.max_tokens > 0 {
        body.insert("max_tokens".into(), json!(req.max_tokens));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(seed) = req.seed {
        body.insert("seed".into(), json!(seed));
    }
    let filters = [
        ("top_k", req.top_k.map(|k| json!(k))),
        ("min_p", req.min_p.map(|p| json!(p))),
        (
            "repetition_penalty",
            req.repetition_penalty.map(|p| json!(p)),
        ),
        ("presence_penalty", req.presence_penalty.map(|p| json!(p))),
        ("frequency_penalty", req.frequency_penalty.map(|p| json!(p))),
    ];
    for (name, value) in filters {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    if req.min_tokens > 0 {
        body.insert("min_tokens".into(), json!(req.min_tokens));
    }
    if req.ignore_eos {
        body.insert("ignore_eos".into(), json!(true));
    }
    if req.include_stop_str_in_output {
        body.insert("include_stop_str_in_output".into(), json!(true));
    }
    if !req.stop_token_ids.is_empty() {
        body.insert("stop_token_ids".into(), json!(req.stop_token_ids));
    }
    if !req.logit_bias.is_empty() {
        let bias: Map<String, Value> = req
            .logit_bias
            .iter()
            .map(|(id, b)| (id.to_string(), json!(b)))
            .collect();
        body.insert("logit_bias".into(), Value::Object(bias));
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), json!(req.stop));
    }
    if !req.precision.is_empty() {
        body.insert("precision".into(), json!(req.precision));
    }
    if req.prompt_logprobs {
        body.insert("echo".into(), json!(true));
        body.insert("logprobs".into(), json!(0));
    }
    Value::Object(body)
}

fn response(kind: generate_response::Kind) -> GenerateResponse {
    GenerateResponse { kind: Some(kind) }
}

#[tonic::async_trait]
impl GatewayService for GrpcApi {
    type GenerateStream = ReceiverStream<Result<GenerateResponse, Status>>;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let engine = Arc::clone(&self.engine);
        let body = completion_body(request.get_ref()).to_string();
        let parsed = CompletionRequest::from_json(body.as_bytes()).map_err(status)?;
        let limits = Limits {
            max_tokens_limit: engine.max_tokens_limit(),
            context_length: engine.context_length(),
            vocab_size: engine.vocab_size(),
        };
        let validated = parsed.validate(&limits).map_err(status)?;
        if validated.model != engine.model() {
            return Err(status(ApiError::not_found_model(&validated.model)));
        }
        // One prompt, as the message carries it.
        let input = validated.input.into_iter().next();
        let prompt = match input.ok_or_else(|| Status::invalid_argument("no prompt"))? {
            Prompt::Tokens(ids) => ids,
            Prompt::Text(text) => {
                let tokenizing = Arc::clone(&engine);
                tokio::task::spawn_blocking(move || tokenizing.tokenize(&text, true))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(status)?
            }
        };
        if prompt.is_empty() {
            return Err(Status::invalid_argument("The prompt must not be empty."));
        }
        let max_tokens = check_context(
            InputField::Prompt,
            prompt.len(),
            validated.params.max_tokens,
            &limits,
        )
        .map_err(status)?;
        let job = Job {
            prompt,
            max_tokens,
            params: validated.params,
        };
        let mut events = engine.submit(job).map_err(status)?;
        let (send, receive) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let token = |t: crate::engine::Token| Token {
                    id: t.id,
                    text: t.text,
                    logprob: t.logprob,
                };
                let (message, last) = match event {
                    Event::Prompt(tokens) => {
                        let tokens = tokens.into_iter().map(token).collect();
                        let prompt = generate_response::Kind::Prompt(PromptTokens { tokens });
                        (Ok(response(prompt)), false)
                    }
                    Event::Token(t) => (
                        Ok(response(generate_response::Kind::Token(token(t)))),
                        false,
                    ),
                    Event::Finished { reason, usage, .. } => {
                        let finished = Finished {
                            finish_reason: match reason {
                                FinishReason::Stop => "stop",
                                FinishReason::Length => "length",
                            }
                            .into(),
                            usage: Some(Usage {
                                prompt_tokens: usage.prompt_tokens as u32,
                                completion_tokens: usage.completion_tokens as u32,
                            }),
                        };
                        (
                            Ok(response(generate_response::Kind::Finished(finished))),
                            true,
                        )
                    }
                    Event::Failed(e) => (Err(status(e)), true),
                };
                // A client that went away drops `events` here, which cancels the sequence.
                if send.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receive)))
    }
}
