//! `moe generate` and `moe logits`: the single-process model on one prompt.

use anyhow::Context;
use moe_model::sampling::Shaping;
use moe_model::{GenerateParams, Logits, SamplingParams, Tokenizer, generate as run_generate};
use serde_json::json;

use crate::model_args::{ModelArgs, TokenIds};

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("input").required(true))]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text (tokenized with the checkpoint's tokenizer.json).
    #[arg(long, group = "input")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. 1,2,3.
    #[arg(long, group = "input")]
    prompt_ids: Option<TokenIds>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens reaching this probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object instead of the text.
    #[arg(long)]
    json: bool,
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let tokenizer = match (&args.prompt, Tokenizer::from_dir(&args.model.model)) {
        (Some(_), Err(e)) => {
            return Err(e).context("--prompt needs the checkpoint's tokenizer.json");
        }
        (_, t) => t.ok(),
    };
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => tokenizer.as_ref().context("no tokenizer")?.encode(text)?,
        (None, Some(ids)) => ids.0.clone(),
        (None, None) => anyhow::bail!("give --prompt or --prompt-ids"),
    };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            shaping: Shaping {
                top_k: args.top_k,
                ..Shaping::default()
            },
        },
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    let out = run_generate(&model, tokenizer.as_ref(), &prompt, &params)?;
    if args.json {
        let value = json!({
            "token_ids": out.token_ids,
            "text": out.text,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.token_ids.len(),
            "tokens_per_second": out.decode_tokens_per_second(),
            "finish_reason": out.finish_reason.as_str(),
        });
        println!("{value}");
    } else {
        match &out.text {
            Some(text) => println!("{text}"),
            None => println!("{:?}", out.token_ids),
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt as comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    prompt_ids: TokenIds,
}

pub fn logits(args: &LogitsArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let mut cache = model.new_cache();
    let logits = model.forward(&args.prompt_ids.0, &mut cache, Logits::Last)?;
    println!("{}", json!({ "logits": logits }));
    Ok(())
}
