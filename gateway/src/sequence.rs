//! One sequence's decoding, after each model step: sample the next token from the last
//! position's logits, decide whether generation ends (an end-of-sequence or stop token, a stop
//! string, `max_tokens`; none of the first three before `min_tokens`, whose ending tokens cannot
//! be sampled until then), and turn the tokens into the text the client sees.
//!
//! Text is streamed as it becomes final: the whole completion is decoded after each token and
//! only the part past what was already sent goes out, held back while it ends in an incomplete
//! UTF-8 character (the decoder's U+FFFD) or in what could be the beginning of a stop string, so
//! that a stop string never reaches the client, not even in part. The end-of-sequence token is
//! not part of the text; a stop string ends the text before it.

use moe_model::ops::log_softmax;
use moe_model::sampling::{Sampler, SamplingParams as ModelSampling};
use moe_model::{ModelError, Tokenizer};

use crate::engine::{Event, Token};
use crate::openai::{Ending, FinishReason, SamplingParams, StopReason, Usage};

/// A sequence being decoded.
pub struct Decoding {
    sampler: Sampler,
    eos: Vec<u32>,
    stop: Vec<String>,
    ending: Ending,
    max_tokens: usize,
    logprobs: Option<usize>,
    prompt_tokens: usize,
    generated: Vec<u32>,
    /// The end-of-sequence or stop token that ended generation: generated, so counted in the
    /// usage as vLLM counts it, but no part of the text or of the next step's input.
    ended_by: Option<u32>,
    /// Bytes of the decoded completion already sent.
    sent: usize,
}

impl Decoding {
    /// The decoding of a completion of `prompt`.
    pub fn new(
        params: &SamplingParams,
        max_tokens: usize,
        prompt: &[u32],
        eos: Vec<u32>,
    ) -> Result<Decoding, ModelError> {
        let sampler = Sampler::new(ModelSampling {
            temperature: params.temperature,
            top_p: params.top_p,
            shaping: params.shaping.clone(),
            seed: params.seed.unwrap_or(0),
        })?
        .with_prompt(prompt);
        let prompt_tokens = prompt.len();
        Ok(Decoding {
            sampler,
            eos,
            stop: params.stop.clone(),
            ending: params.ending.clone(),
            max_tokens,
            logprobs: params.logprobs,
            prompt_tokens,
            generated: Vec::new(),
            ended_by: None,
            sent: 0,
        })
    }

    /// The tokens generated so far (the next model step's input is the last one).
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// The completion's tokens as its usage counts them: those generated and the ending token.
    pub fn completion_tokens(&self) -> usize {
        self.generated.len() + usize::from(self.ended_by.is_some())
    }

    /// Samples from `logits` (the last position's) and returns the events for the client; the
    /// last event is `Finished` when generation ends with this token. With `max_tokens` 0 (a
    /// prompt being scored) nothing is sampled: the sequence ends at once.
    pub fn advance(
        &mut self,
        logits: &[f32],
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Event>, ModelError> {
        if self.max_tokens == 0 {
            return Ok(vec![self.finished(FinishReason::Length, None)]);
        }
        let early = self.generated.len() < self.ending.min_tokens;
        // Log-probabilities stay those of the model's logits, as vLLM reports them.
        let id = match early {
            true => self.sampler.sample(&self.without_ending_tokens(logits)),
            false => self.sampler.sample(logits),
        };
        let (logprob, top) = match self.logprobs {
            Some(k) => {
                let (lp, top) = token_logprobs(logits, id, k, tokenizer)?;
                (Some(lp), top)
            }
            None => (None, Vec::new()),
        };
        if self.ends_with(id) {
            self.ended_by = Some(id);
            let text = self.flush(tokenizer)?;
            // vLLM names a stop token, not an end-of-sequence one.
            let stop = self.ending.stop_token_ids.contains(&id);
            let stop_reason = stop.then_some(StopReason::Token(id));
            return Ok(self.finish(text, stop_reason));
        }
        self.generated.push(id);
        let decoded = tokenizer.decode(&self.generated)?;
        // The first stop string in the text, where it starts and ends.
        let stop_at = self
            .stop
            .iter()
            .filter(|_| !early)
            .filter_map(|s| decoded.find(s.as_str()).map(|at| (at, at + s.len(), s)))
            .min();
        let mut events = Vec::new();
        if let Some((start, end, stop)) = stop_at {
            let cut = if self.ending.include_stop_str {
                end
            } else {
                start
            };
            let text = decoded[self.sent.min(cut)..cut].to_string();
            self.sent = cut;
            events.push(Event::Token(Token {
                id,
                text,
                logprob,
                top,
            }));
            let stop_reason = Some(StopReason::Text(stop.clone()));
            events.push(self.finished(FinishReason::Stop, stop_reason));
            return Ok(events);
        }
        let ready = self.ready_len(&decoded);
        let text = decoded[self.sent.min(ready)..ready].to_string();
        self.sent = self.sent.max(ready);
        events.push(Event::Token(Token {
            id,
            text,
            logprob,
            top,
        }));
        if self.generated.len() >= self.max_tokens {
            let rest = decoded[self.sent..].to_string();
            self.sent = decoded.len();
            if let Some(Event::Token(t)) = events.last_mut() {
                t.text.push_str(&rest);
            }
            events.push(self.finished(FinishReason::Length, None));
        }
        Ok(events)
    }

    /// Whether sampling `id` ends generation: an end-of-sequence token (unless `ignore_eos`) or a
    /// stop token.
    fn ends_with(&self, id: u32) -> bool {
        (!self.ending.ignore_eos && self.eos.contains(&id))
            || self.ending.stop_token_ids.contains(&id)
    }

    /// `logits` with every token that would end generation made impossible (before
    /// `min_tokens`).
    fn without_ending_tokens(&self, logits: &[f32]) -> Vec<f32> {
        let mut held = logits.to_vec();
        let eos = self.eos.iter().filter(|_| !self.ending.ignore_eos);
        for &id in eos.chain(&self.ending.stop_token_ids) {
            if let Some(l) = held.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        held
    }

    /// How much of `decoded` can be sent: all of it but an incomplete character at the end and
    /// the longest ending that begins a stop string.
    fn ready_len(&self, decoded: &str) -> usize {
        let mut end = decoded.len();
        if decoded.ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        let held = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k))
                    .map(move |k| &s[..k])
            })
            .filter(|prefix| decoded[..end].ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        end - held
    }

    /// The text not sent yet, when the sequence ends on an end-of-sequence token.
    fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String, ModelError> {
        let decoded = tokenizer.decode(&self.generated)?;
        let rest = decoded.get(self.sent..).unwrap_or("").to_string();
        self.sent = decoded.len();
        Ok(rest)
    }

    /// The events that end the sequence on an end-of-sequence or stop token: the text not sent
    /// yet, then `Finished` with `stop_reason`.
    fn finish(&self, text: String, stop_reason: Option<StopReason>) -> Vec<Event> {
        let mut events = Vec::new();
        if !text.is_empty() {
            events.push(Event::Token(Token {
                id: *self.generated.last().unwrap_or(&0),
                text,
                logprob: None,
                top: Vec::new(),
            }));
        }
        events.push(self.finished(FinishReason::Stop, stop_reason));
        events
    }

    fn finished(&self, reason: FinishReason, stop_reason: Option<StopReason>) -> Event {
        Event::Finished {
            reason,
            usage: Usage::new(self.prompt_tokens, self.completion_tokens()),
            stop_reason,
        }
    }
}

/// The log-probability of `id` under `logits` and the `k` most likely tokens with theirs.
pub fn token_logprobs(
    logits: &[f32],
    id: u32,
    k: usize,
    tokenizer: &Tokenizer,
) -> Result<(f32, Vec<(String, f32)>), ModelError> {
    let lp = log_softmax(logits);
    let mut order: Vec<usize> = (0..lp.len()).collect();
    order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
    let top = order
        .into_iter()
        .take(k)
        .map(|i| Ok((tokenizer.decode(&[i as u32])?, lp[i] as f32)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok((lp[id as usize] as f32, top))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use moe_model::sampling::Shaping;

    use crate::openai::Precision;

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral"),
        )
        .unwrap()
    }

    fn params(stop: &[&str], logprobs: Option<usize>) -> SamplingParams {
        SamplingParams {
            max_tokens: None,
            temperature: 0.0,
            top_p: 1.0,
            shaping: Shaping::default(),
            ending: Ending::default(),
            seed: None,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            logprobs,
            echo: false,
            precision: Precision::Exact,
            stream: true,
            include_usage: false,
            n: 1,
        }
    }

    /// Logits that make greedy sampling pick `id`.
    fn pick(id: u32, vocab: usize) -> Vec<f32> {
        let mut logits: Vec<f32> = (0..vocab).map(|i| (i % 7) as f32 * 0.1).collect();
        logits[id as usize] = 10.0;
        logits
    }

    /// Feeds `ids` one by one; returns the streamed text and the last event.
    fn run(d: &mut Decoding, ids: &[u32], tok: &Tokenizer) -> (String, Option<Event>) {
        let vocab = tok.vocab_size();
        let mut text = String::new();
        for &id in ids {
            for event in d.advance(&pick(id, vocab), tok).unwrap() {
                match event {
                    Event::Token(t) => text.push_str(&t.text),
                    other => return (text, Some(other)),
                }
            }
        }
        (text, None)
    }

    #[test]
    fn streamed_text_is_the_decoded_completion_and_ends_at_max_tokens() {
        let tok = tokenizer();
        let ids = tok.encode("hello brave new world").unwrap();
        let mut d = Decoding::new(&params(&[], None), ids.len(), &[1; 3], vec![]).unwrap();
        let (text, last) = run(&mut d, &ids, &tok);
        assert_eq!(text, tok.decode(&ids).unwrap());
        assert_eq!(
            last,
            Some(Event::Finished {
                reason: FinishReason::Length,
                usage: Usage::new(3, ids.len()),
                stop_reason: None,
            })
        );
    }

    /// Decodes with `ending` while the model always prefers token 2 (the end of sequence), then
    /// token 5: the generated tokens and why generation ended.
    fn ending_run(ending: Ending, max_tokens: usize) -> (Vec<u32>, FinishReason) {
        let (generated, reason, _) = ending_run_with_stop(ending, max_tokens);
        (generated, reason)
    }

    /// As [`ending_run`], with the stop reason.
    fn ending_run_with_stop(
        ending: Ending,
        max_tokens: usize,
    ) -> (Vec<u32>, FinishReason, Option<StopReason>) {
        let tok = tokenizer();
        let params = SamplingParams {
            ending,
            ..params(&[], None)
        };
        let mut d = Decoding::new(&params, max_tokens, &[1], vec![2]).unwrap();
        let mut logits = pick(2, tok.vocab_size());
        logits[5] = 9.0;
        for _ in 0..max_tokens {
            for event in d.advance(&logits, &tok).unwrap() {
                if let Event::Finished {
                    reason,
                    stop_reason,
                    ..
                } = event
                {
                    return (d.generated().to_vec(), reason, stop_reason);
                }
            }
        }
        panic!("generation did not end within max_tokens");
    }

    #[test]
    fn min_tokens_holds_off_ending_tokens_and_ignore_eos_and_stop_tokens_steer_the_end() {
        assert_eq!(
            ending_run(Ending::default(), 8),
            (vec![], FinishReason::Stop)
        );
        let min3 = Ending {
            min_tokens: 3,
            ..Ending::default()
        };
        assert_eq!(ending_run(min3, 8), (vec![5, 5, 5], FinishReason::Stop));
        let ignore = Ending {
            ignore_eos: true,
            ..Ending::default()
        };
        assert_eq!(
            ending_run(ignore, 4),
            (vec![2, 2, 2, 2], FinishReason::Length)
        );
        // With the end of sequence ignored, a stop token ends generation in its place, but not
        // before min_tokens.
        let stop_at_2 = Ending {
            min_tokens: 2,
            stop_token_ids: vec![2],
            ignore_eos: true,
            ..Ending::default()
        };
        let (generated, reason, stop) = ending_run_with_stop(stop_at_2, 8);
        assert_eq!((generated, reason), (vec![5, 5], FinishReason::Stop));
        assert_eq!(
            stop,
            Some(StopReason::Token(2)),
            "vLLM names the stop token"
        );
        let (_, _, stop) = ending_run_with_stop(Ending::default(), 8);
        assert_eq!(stop, None, "but not an end of sequence");
        let stop_at_5 = Ending {
            stop_token_ids: vec![5],
            ignore_eos: true,
            ..Ending::default()
        };
        assert_eq!(
            ending_run(stop_at_5, 3),
            (vec![2, 2, 2], FinishReason::Length)
        );
    }

    #[test]
    fn an_end_of_sequence_token_ends_without_adding_text_but_is_counted() {
        let tok = tokenizer();
        let ids = tok.encode("abc").unwrap();
        let eos = 2;
        let mut d = Decoding::new(&params(&[], None), 64, &[1; 1], vec![eos]).unwrap();
        let mut all = ids.clone();
        all.push(eos);
        let (text, last) = run(&mut d, &all, &tok);
        assert_eq!(text, tok.decode(&ids).unwrap());
        assert_eq!(
            last,
            Some(Event::Finished {
                reason: FinishReason::Stop,
                usage: Usage::new(1, ids.len() + 1),
                stop_reason: None,
            })
        );
        assert_eq!(d.generated(), ids, "the next step's input leaves it out");
    }

    #[test]
    fn a_prompt_only_scored_ends_at_once_with_nothing_sampled() {
        let tok = tokenizer();
        let mut d = Decoding::new(&params(&[], None), 0, &[1, 7, 9], vec![2]).unwrap();
        let events = d.advance(&[0.0; 512], &tok).unwrap();
        let finished = Event::Finished {
            reason: FinishReason::Length,
            usage: Usage::new(3, 0),
            stop_reason: None,
        };
        assert_eq!(events, vec![finished]);
        assert!(d.generated().is_empty());
    }

    /// Streams "one two END three" through a decoding that stops at "END" (kept in the text
    /// when `include`): the streamed pieces and the last event.
    fn stop_at_end(include: bool) -> (Vec<String>, Option<Event>) {
        let tok = tokenizer();
        let ids = tok.encode("one two END three").unwrap();
        let params = SamplingParams {
            ending: Ending {
                include_stop_str: include,
                ..Ending::default()
            },
            ..params(&["END"], None)
        };
        let mut d = Decoding::new(&params, 64, &[1; 1], vec![]).unwrap();
        let vocab = tok.vocab_size();
        let mut streamed = Vec::new();
        for &id in &ids {
            for event in d.advance(&pick(id, vocab), &tok).unwrap() {
                match event {
                    Event::Token(t) => streamed.push(t.text),
                    other => return (streamed, Some(other)),
                }
            }
        }
        (streamed, None)
    }

    #[test]
    fn include_stop_str_in_output_keeps_the_stop_string() {
        let (streamed, finished) = stop_at_end(true);
        assert_eq!(streamed.concat(), "one two END");
        assert!(matches!(
            finished,
            Some(Event::Finished {
                reason: FinishReason::Stop,
                stop_reason: Some(StopReason::Text(s)),
                ..
            }) if s == "END"
        ));
    }

    #[test]
    fn no_part_of_a_stop_string_is_ever_streamed() {
        let (streamed, finished) = stop_at_end(false);
        let text: String = streamed.concat();
        assert_eq!(text, "one two ");
        assert!(streamed.iter().all(|t| !t.contains('E')), "{streamed:?}");
        assert!(matches!(
            finished,
            Some(Event::Finished {
                reason: FinishReason::Stop,
                ..
            })
        ));
    }

    #[test]
    fn log_probabilities_come_with_the_most_likely_alternatives() {
        let tok = tokenizer();
        let mut d = Decoding::new(&params(&[], Some(3)), 8, &[1; 1], vec![]).unwrap();
        let events = d.advance(&pick(7, tok.vocab_size()), &tok).unwrap();
        let Event::Token(t) = &events[0] else {
            panic!("{events:?}");
        };
        assert_eq!(t.id, 7);
        assert_eq!(t.top.len(), 3);
        assert_eq!(t.top[0], (tok.decode(&[7]).unwrap(), t.logprob.unwrap()));
        assert!(t.top[0].1 >= t.top[1].1 && t.top[1].1 >= t.top[2].1);
        assert!(t.logprob.unwrap() < 0.0 && t.logprob.unwrap() > -0.1);
    }
}
