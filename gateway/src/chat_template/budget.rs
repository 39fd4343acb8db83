//! How much one render of a chat template may do: the minijinja fuel it may burn and the
//! bytes the prompt may have, both in proportion to the conversation, so that a template that
//! loops without end or writes without end is stopped with an error in well under a second for
//! an ordinary conversation. Rendering itself is the parent module's.
//!
//! Fuel is minijinja's one budget for a render: about one fuel per instruction executed, and
//! one per 64 bytes of data created, written or processed (see `Environment::set_fuel`), so it
//! bounds both the time a render takes and the memory it allocates. The committed real
//! templates use 100 to 300 fuel for a four-message conversation, and under 200 fuel a message
//! for a conversation of 401 messages of 2 KB each: a few percent of the budget at most (the
//! chat template integration tests print the figures and check that every one stays under a
//! tenth of its budget). A template that loops without end is stopped after about 2 ms for a
//! four-message conversation and about 1.1 s for 30,000 one-character messages (most of a 1 MiB
//! body), measured in a release build.

use std::io;

use super::Message;

/// Fuel every render may use, whatever the conversation.
pub const BASE_FUEL: u64 = 100_000;
/// Further fuel per message of the conversation.
pub const FUEL_PER_MESSAGE: u64 = 2_000;
/// Further fuel per byte of the messages' roles and contents.
pub const FUEL_PER_CONTENT_BYTE: u64 = 1;

/// Bytes every prompt may have, whatever the conversation.
pub const BASE_PROMPT_BYTES: usize = 1 << 20;
/// Further prompt bytes per message.
pub const PROMPT_BYTES_PER_MESSAGE: usize = 4096;
/// Further prompt bytes per byte of the messages' roles and contents.
pub const PROMPT_BYTES_PER_CONTENT_BYTE: usize = 4;

/// The limits of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderBudget {
    /// The minijinja fuel the render may use.
    pub fuel: u64,
    /// The most bytes the rendered prompt may have.
    pub prompt_bytes: usize,
}

impl RenderBudget {
    /// The budget for rendering `messages`.
    pub fn for_conversation(messages: &[Message]) -> RenderBudget {
        let content_bytes: usize = messages
            .iter()
            .map(|message| message.role.len() + message.content.len())
            .sum();
        let count = messages.len();
        RenderBudget {
            fuel: BASE_FUEL
                .saturating_add(FUEL_PER_MESSAGE.saturating_mul(count as u64))
                .saturating_add(FUEL_PER_CONTENT_BYTE.saturating_mul(content_bytes as u64)),
            prompt_bytes: BASE_PROMPT_BYTES
                .saturating_add(PROMPT_BYTES_PER_MESSAGE.saturating_mul(count))
                .saturating_add(PROMPT_BYTES_PER_CONTENT_BYTE.saturating_mul(content_bytes)),
        }
    }
}

/// The prompt as the template writes it, refusing every write past its bound.
#[derive(Debug)]
pub struct PromptBuffer {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl PromptBuffer {
    /// An empty prompt that may grow to `limit` bytes.
    pub fn new(limit: usize) -> PromptBuffer {
        PromptBuffer {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    /// Whether a write was refused for going past the bound.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl io::Write for PromptBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("the prompt is longer than its bound"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn the_budget_grows_with_the_conversation() {
        let empty = RenderBudget::for_conversation(&[]);
        assert_eq!(empty.fuel, BASE_FUEL);
        assert_eq!(empty.prompt_bytes, BASE_PROMPT_BYTES);
        let one = RenderBudget::for_conversation(&[Message::new("user", "hello")]);
        assert_eq!(
            one.fuel,
            BASE_FUEL + FUEL_PER_MESSAGE + 9 * FUEL_PER_CONTENT_BYTE
        );
        assert_eq!(
            one.prompt_bytes,
            BASE_PROMPT_BYTES + PROMPT_BYTES_PER_MESSAGE + 9 * PROMPT_BYTES_PER_CONTENT_BYTE
        );
    }

    #[test]
    fn the_prompt_buffer_refuses_writes_past_its_bound() {
        let mut buffer = PromptBuffer::new(5);
        buffer.write_all(b"abc").unwrap();
        assert!(!buffer.overflowed());
        assert!(buffer.write_all(b"def").is_err());
        assert!(buffer.overflowed());
        assert_eq!(buffer.into_bytes(), b"abc");
    }
}
