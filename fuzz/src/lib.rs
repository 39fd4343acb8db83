//! Mutation fuzzing without coverage guidance, small enough to run in CI on every change: a
//! deterministic generator of hostile inputs from a corpus of valid ones. The targets live in
//! `tests/`, one per parser that takes outside input; each runs [`iterations`] mutated inputs
//! (`MOE_FUZZ_ITERATIONS`, default [`DEFAULT_ITERATIONS`]) from the seed `MOE_FUZZ_SEED` and
//! must neither panic nor hang: every input is accepted or refused with an error.
//!
//! Mutations, one to four per input: flip a bit, set a byte, insert random bytes, delete a
//! range, duplicate a range, overwrite with an "interesting" value (0, 0xff, 0x7f, 0x80,
//! `u32::MAX`, `i32::MIN` little-endian), insert a token that parsers find hard (`null`, `-1`,
//! `1e309`, a lone quote or bracket, a 20-digit number, a long run of one byte), splice in part
//! of another corpus entry, or truncate.

use moe_model::rng::Rng;

/// Mutated inputs per target when `MOE_FUZZ_ITERATIONS` is unset.
pub const DEFAULT_ITERATIONS: usize = 2000;

/// `MOE_FUZZ_ITERATIONS`, or [`DEFAULT_ITERATIONS`].
pub fn iterations() -> usize {
    std::env::var("MOE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

/// `MOE_FUZZ_SEED`, or a fixed seed (so a CI failure reproduces).
pub fn seed() -> u64 {
    std::env::var("MOE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

const INTERESTING: [&[u8]; 6] = [
    &[0],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0, 0x80],
];

const TOKENS: [&[u8]; 9] = [
    b"null",
    b"-1",
    b"1e309",
    b"\"",
    b"[",
    b"{",
    b"}",
    b"99999999999999999999",
    b"\\u0000",
];

/// Mutated copies of a corpus of valid inputs.
pub struct Mutator {
    corpus: Vec<Vec<u8>>,
    rng: Rng,
}

impl Mutator {
    pub fn new(corpus: Vec<Vec<u8>>, seed: u64) -> Mutator {
        assert!(
            !corpus.is_empty(),
            "a fuzz target needs at least one valid input"
        );
        Mutator {
            corpus,
            rng: Rng::new(seed),
        }
    }

    /// The next input: a corpus entry with one to four mutations.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut data = self.corpus[self.rng.below(self.corpus.len())].clone();
        for _ in 0..=self.rng.below(4) {
            self.mutate(&mut data);
        }
        data
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        let r = &mut self.rng;
        let at = |r: &mut Rng, len: usize| r.below(len + 1);
        match r.below(10) {
            0 if !data.is_empty() => {
                let i = r.below(data.len());
                data[i] ^= 1 << r.below(8);
            }
            1 if !data.is_empty() => {
                let i = r.below(data.len());
                data[i] = r.next_u64() as u8;
            }
            2 => {
                let i = at(r, data.len());
                let n = 1 + r.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
                data.splice(i..i, bytes);
            }
            3 if !data.is_empty() => {
                let i = r.below(data.len());
                let n = 1 + r.below((data.len() - i).min(64));
                data.drain(i..i + n);
            }
            4 if !data.is_empty() => {
                let i = r.below(data.len());
                let n = 1 + r.below((data.len() - i).min(64));
                let copy = data[i..i + n].to_vec();
                let j = at(r, data.len());
                data.splice(j..j, copy);
            }
            5 if !data.is_empty() => {
                let v = INTERESTING[r.below(INTERESTING.len())];
                let i = r.below(data.len());
                for (k, b) in v.iter().enumerate() {
                    if let Some(slot) = data.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            6 => {
                let t = TOKENS[r.below(TOKENS.len())];
                let i = at(r, data.len());
                data.splice(i..i, t.iter().copied());
            }
            7 => {
                let i = at(r, data.len());
                let n = 1 + r.below(4096);
                let b = [b'a', b'[', b'{', 0xff, b'0'][r.below(5)];
                data.splice(i..i, std::iter::repeat_n(b, n));
            }
            8 => {
                let other = &self.corpus[r.below(self.corpus.len())];
                if !other.is_empty() {
                    let i = r.below(other.len());
                    let n = 1 + r.below((other.len() - i).min(256));
                    let piece = other[i..i + n].to_vec();
                    let j = at(r, data.len());
                    data.splice(j..j, piece);
                }
            }
            _ => {
                let n = at(r, data.len());
                data.truncate(n);
            }
        }
    }
}

/// Runs `target` on `iterations()` inputs from `mutator` and reports how many it accepted.
pub fn run(name: &str, mut mutator: Mutator, mut target: impl FnMut(&[u8]) -> bool) -> usize {
    let n = iterations();
    let started = std::time::Instant::now();
    let mut accepted = 0;
    for _ in 0..n {
        let input = mutator.next_input();
        accepted += usize::from(target(&input));
    }
    println!(
        "{name}: {n} inputs in {:.1} s, {accepted} accepted, the rest refused with an error",
        started.elapsed().as_secs_f64()
    );
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_they_differ_from_the_corpus() {
        let corpus = vec![b"{\"model\": \"m\", \"prompt\": \"hi\"}".to_vec()];
        let mut a = Mutator::new(corpus.clone(), 7);
        let mut b = Mutator::new(corpus.clone(), 7);
        let inputs: Vec<Vec<u8>> = (0..100).map(|_| a.next_input()).collect();
        let again: Vec<Vec<u8>> = (0..100).map(|_| b.next_input()).collect();
        assert_eq!(inputs, again);
        let changed = inputs.iter().filter(|i| **i != corpus[0]).count();
        assert!(changed > 90, "{changed} of 100 inputs were mutated");
    }
}
