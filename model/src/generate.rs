//! Autoregressive generation for one sequence on the single-process model: prefill the prompt,
//! then sample token by token until `max_tokens`, an end-of-sequence token or a stop string.

use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};
use crate::model::{Logits, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these; the text ends before it.
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> GenerateParams {
        GenerateParams {
            max_tokens: 16,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why generation ended, named as the OpenAI API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, without the end-of-sequence token that ended them.
    pub token_ids: Vec<u32>,
    /// Decoded text (cut before a stop string), when a tokenizer was given.
    pub text: Option<String>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl Generation {
    /// Decode speed over the tokens after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let steps = self.token_ids.len().saturating_sub(1);
        if steps == 0 || self.decode_time.is_zero() {
            return 0.0;
        }
        steps as f64 / self.decode_time.as_secs_f64()
    }
}

/// Generates a continuation of `prompt`. Stop strings need a tokenizer.
pub fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    params: &GenerateParams,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::InvalidArgument(
            "the prompt has no tokens".into(),
        ));
    }
    if params.max_tokens == 0 {
        return Err(ModelError::InvalidArgument(
            "max_tokens must be at least 1".into(),
        ));
    }
    if !params.stop.is_empty() && tokenizer.is_none() {
        return Err(ModelError::InvalidArgument(
            "stop strings need a tokenizer".into(),
        ));
    }
    let needed = prompt.len() + params.max_tokens;
    if needed > model.max_context() {
        return Err(ModelError::ContextOverflow {
            len: needed,
            max: model.max_context(),
        });
    }
    let mut sampler = Sampler::new(params.sampling.clone())?.with_prompt(prompt);
    let eos = &model.config().eos_token_ids;
    let mut cache = model.new_cache();

    let start = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let prefill_time = start.elapsed();
    let decode_start = Instant::now();

    let mut token_ids = Vec::new();
    let mut text = None;
    let mut finish_reason = FinishReason::Length;
    loop {
        let next = sampler.sample(&logits);
        if !params.ignore_eos && eos.contains(&next) {
            finish_reason = FinishReason::Stop;
            break;
        }
        token_ids.push(next);
        if let (Some(tok), false) = (tokenizer, params.stop.is_empty()) {
            let decoded = tok.decode(&token_ids)?;
            if let Some(cut) = params
                .stop
                .iter()
                .filter_map(|s| decoded.find(s.as_str()))
                .min()
            {
                text = Some(decoded[..cut].to_string());
                finish_reason = FinishReason::Stop;
                break;
            }
        }
        if token_ids.len() == params.max_tokens {
            break;
        }
        logits = model.forward(&[next], &mut cache, Logits::Last)?;
    }
    let decode_time = decode_start.elapsed();
    if text.is_none() {
        text = tokenizer.map(|t| t.decode(&token_ids)).transpose()?;
    }
    Ok(Generation {
        token_ids,
        text,
        finish_reason,
        prompt_tokens: prompt.len(),
        prefill_time,
        decode_time,
    })
}
