//! A deterministic byte-level BPE tokenizer of any size from 259 tokens up, as a `tokenizer.json`
//! that HF `tokenizers` (Rust and Python) load, plus its `tokenizer_config.json`. Not a trainer for
//! real data: the merges come from a small built-in English and code corpus.
//!
//! The vocabulary, by id:
//! - 0 `<pad>`, 1 `<s>` (bos), 2 `</s>` (eos): special tokens, in the model vocabulary and in
//!   `added_tokens`;
//! - 3..259: the 256 symbols of the GPT-2 byte-level alphabet, in byte order, so any text encodes;
//! - then one token per merge until the vocabulary has exactly the size asked for: first the merges
//!   BPE learns from the corpus (most frequent pair first, ties to the lowest ids), then, once the
//!   corpus has no pairs left, every token that ends in a lowercase ASCII letter extended by `a`..`z`, in id
//!   order.
//!
//! Pre-tokenizer and decoder are GPT-2's `ByteLevel` (no prefix space, with its regex); there is no
//! normalizer and no post-processor, so encoding adds no special tokens: the chat template writes
//! `<s>` and `</s>` itself (`<s>{role}\n{content}</s>\n` per message, ChatML with `<s>`/`</s>` in
//! place of `<|im_start|>`/`<|im_end|>`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::error::SynthError;

pub const PAD_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
/// The special tokens, at ids 0, 1 and 2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<pad>", "<s>", "</s>"];
/// The smallest vocabulary: the special tokens and the byte alphabet.
pub const MIN_VOCAB_SIZE: usize = SPECIAL_TOKENS.len() + 256;

const CORPUS: &str = include_str!("corpus.txt");

const CHAT_TEMPLATE: &str = "{%- for message in messages -%}\
{{ bos_token + message['role'] + '\\n' + message['content'] + eos_token + '\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ bos_token + 'assistant\\n' }}{%- endif -%}";

/// The `tokenizer.json` of a byte-level BPE tokenizer with exactly `vocab_size` tokens.
pub fn tokenizer_json(vocab_size: usize) -> Result<Value, SynthError> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(SynthError::InvalidArgument(format!(
            "a byte-level vocabulary needs at least {MIN_VOCAB_SIZE} tokens, not {vocab_size}"
        )));
    }
    let mut vocab = Vocab::with_alphabet();
    vocab.learn(&corpus_words(&vocab)?, vocab_size);
    vocab.extend_letters(vocab_size);
    Ok(vocab.to_json())
}

/// The `tokenizer_config.json` that goes with [`tokenizer_json`].
pub fn tokenizer_config_json(model_max_length: usize) -> Value {
    let added: Map<String, Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            let mut token = added_token(content);
            if let Some(t) = token.as_object_mut() {
                t.remove("id");
            }
            (id.to_string(), token)
        })
        .collect();
    json!({
        "added_tokens_decoder": added,
        "add_bos_token": false,
        "add_eos_token": false,
        "bos_token": SPECIAL_TOKENS[BOS_ID as usize],
        "eos_token": SPECIAL_TOKENS[EOS_ID as usize],
        "pad_token": SPECIAL_TOKENS[PAD_ID as usize],
        "unk_token": null,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    })
}

fn added_token(content: &str) -> Value {
    let id = SPECIAL_TOKENS.iter().position(|s| *s == content);
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": true,
    })
}

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes stand for
/// themselves, the others take the characters from U+0100 on, in byte order.
fn byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next = 0x100;
    for (b, c) in (0u8..=255).zip(chars.iter_mut()) {
        *c = if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    chars
}

/// The corpus split the way the `ByteLevel` pre-tokenizer splits input, each piece with its count,
/// as token ids of the byte alphabet, in a fixed order.
fn corpus_words(vocab: &Vocab) -> Result<Vec<(Vec<u32>, u64)>, SynthError> {
    let mut text = PreTokenizedString::from(CORPUS);
    ByteLevel::new(false, true, true)
        .pre_tokenize(&mut text)
        .map_err(|e| SynthError::Tokenizer(format!("pre-tokenizing the corpus: {e}")))?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for (piece, _, _) in text.get_splits(OffsetReferential::Original, OffsetType::Byte) {
        *counts.entry(piece).or_default() += 1;
    }
    let mut pieces: Vec<(&str, u64)> = counts.into_iter().collect();
    pieces.sort_unstable();
    pieces
        .into_iter()
        .map(|(piece, count)| {
            let ids = piece
                .chars()
                .map(|c| {
                    vocab.id(&c.to_string()).ok_or_else(|| {
                        SynthError::Tokenizer(format!("`{c}` is not in the byte alphabet"))
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?;
            Ok((ids, count))
        })
        .collect()
}

/// Tokens by id, their ids, and the merges in rank order.
struct Vocab {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    merges: Vec<(u32, u32)>,
}

impl Vocab {
    fn with_alphabet() -> Vocab {
        let mut vocab = Vocab {
            tokens: Vec::new(),
            ids: HashMap::new(),
            merges: Vec::new(),
        };
        for s in SPECIAL_TOKENS {
            vocab.intern(s.to_string());
        }
        for c in byte_chars() {
            vocab.intern(c.to_string());
        }
        vocab
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The id of `token`, added at the end if new.
    fn intern(&mut self, token: String) -> u32 {
        if let Some(id) = self.id(&token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.ids.insert(token.clone(), id);
        self.tokens.push(token);
        id
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let merged = format!("{}{}", self.tokens[a as usize], self.tokens[b as usize]);
        self.merges.push((a, b));
        self.intern(merged)
    }

    /// Classic BPE over `words` until the vocabulary reaches `target` or no pair is left.
    fn learn(&mut self, words: &[(Vec<u32>, u64)], target: usize) {
        let mut words = words.to_vec();
        while self.len() < target {
            let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
            for (word, count) in &words {
                for pair in word.windows(2) {
                    *pairs.entry((pair[0], pair[1])).or_default() += count;
                }
            }
            let best = pairs
                .into_iter()
                .max_by_key(|&(pair, count)| (count, std::cmp::Reverse(pair)));
            let Some(((a, b), _)) = best else { break };
            let merged = self.merge(a, b);
            for (word, _) in &mut words {
                let mut i = 0;
                while i + 1 < word.len() {
                    if word[i] == a && word[i + 1] == b {
                        word[i] = merged;
                        word.remove(i + 1);
                    }
                    i += 1;
                }
            }
        }
    }

    /// Fills the vocabulary to `target` with letter extensions of existing tokens.
    fn extend_letters(&mut self, target: usize) {
        let letters: Vec<u32> = ('a'..='z')
            .filter_map(|c| self.id(&c.to_string()))
            .collect();
        let mut base = SPECIAL_TOKENS.len();
        while self.len() < target && base < self.len() {
            if self.tokens[base].ends_with(|c: char| c.is_ascii_lowercase()) {
                for &letter in &letters {
                    if self.len() == target {
                        break;
                    }
                    let merged = format!("{}{}", self.tokens[base], self.tokens[letter as usize]);
                    if self.id(&merged).is_none() {
                        self.merge(base as u32, letter);
                    }
                }
            }
            base += 1;
        }
    }

    fn to_json(&self) -> Value {
        let vocab: Map<String, Value> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), Value::from(id)))
            .collect();
        let merges: Vec<Value> = self
            .merges
            .iter()
            .map(|&(a, b)| json!([self.tokens[a as usize], self.tokens[b as usize]]))
            .collect();
        let byte_level = json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
        });
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": SPECIAL_TOKENS.map(added_token),
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merges,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    fn load(vocab_size: usize) -> Tokenizer {
        let json = tokenizer_json(vocab_size).unwrap();
        Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let chars = byte_chars();
        let mut sorted = chars.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert_eq!(chars[b' ' as usize], '\u{120}');
        assert_eq!(chars[b'a' as usize], 'a');
        assert_eq!(chars[b'\n' as usize], '\u{10A}');
        let official = ByteLevel::alphabet();
        assert!(chars.iter().all(|c| official.contains(c)));
    }

    #[test]
    fn exact_sizes() {
        for size in [MIN_VOCAB_SIZE, 300, 512, 4096] {
            assert_eq!(load(size).get_vocab_size(true), size, "vocab {size}");
        }
        assert!(matches!(
            tokenizer_json(100),
            Err(SynthError::InvalidArgument(_))
        ));
    }

    #[test]
    fn specials_and_every_id_decode() {
        let t = load(512);
        for (id, s) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(t.token_to_id(s), Some(id as u32));
        }
        for id in 0..512 {
            assert!(t.id_to_token(id).is_some(), "id {id}");
            t.decode(&[id], false).unwrap();
        }
        let enc = t.encode("<s>hi</s>", true).unwrap();
        assert_eq!(enc.get_ids().first(), Some(&BOS_ID));
        assert_eq!(enc.get_ids().last(), Some(&EOS_ID));
    }

    #[test]
    fn round_trips_and_compresses() {
        let t = load(512);
        for text in [
            "def f(x):\n    return x * 2  # ünï ✓",
            "The quick brown fox jumps over the lazy dog.\n\n\tTabs, emoji 🦀 and 漢字.",
            "",
        ] {
            let ids = t.encode(text, false).unwrap().get_ids().to_vec();
            assert!(!ids.contains(&BOS_ID), "no special tokens are added");
            assert_eq!(t.decode(&ids, false).unwrap(), text);
        }
        let common = "the people and the work that they do for each other";
        let n = t.encode(common, false).unwrap().len();
        assert!(
            n * 2 < common.len(),
            "{n} tokens for {} bytes",
            common.len()
        );
    }

    #[test]
    fn deterministic() {
        assert_eq!(tokenizer_json(600).unwrap(), tokenizer_json(600).unwrap());
        let big = tokenizer_json(4096).unwrap();
        let merges = big["model"]["merges"].as_array().unwrap();
        assert!(merges.len() >= 4096 - MIN_VOCAB_SIZE);
    }

    #[test]
    fn chat_template_names_the_specials() {
        let c = tokenizer_config_json(4096);
        assert_eq!(c["bos_token"], "<s>");
        assert_eq!(c["eos_token"], "</s>");
        assert_eq!(c["added_tokens_decoder"]["2"]["content"], "</s>");
        let template = c["chat_template"].as_str().unwrap();
        assert!(template.contains("bos_token") && template.contains("add_generation_prompt"));
    }
}
