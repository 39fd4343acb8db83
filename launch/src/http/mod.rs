//! The one HTTP/1.1 client of the CLI and the tests: a request per connection, every call under
//! a deadline. A pure core — [`Request`] building, [`Reader`] parsing a response's head and
//! decoding its body (length, chunked or until close), [`Events`] splitting server-sent events,
//! and the [`Reception`]s that keep a whole [`Response`] or follow a streamed completion
//! ([`Streamed`]) — under two thin shells that only move bytes: [`blocking`] (std TCP, for
//! threads) and [`nonblocking`] (tokio, for tasks).

pub mod blocking;
mod events;
pub mod nonblocking;
mod reception;
mod request;
mod response;

pub use events::{Event, Events};
pub use reception::{CompletionStream, Reception, Streamed, Whole};
pub use request::Request;
pub use response::{Head, Reader, Response};

/// The request of a completion `body` (a JSON object of `/v1/completions`); a streamed one is
/// followed with a [`CompletionStream`] through either shell's `exchange`.
pub fn completion(body: &serde_json::Value) -> Request {
    Request::post("/v1/completions", body.to_string())
}
