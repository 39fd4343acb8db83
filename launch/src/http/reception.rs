//! What a shell does with a response's bytes as they arrive: keep the whole response
//! ([`Whole`]), or follow a streamed completion's events ([`CompletionStream`]). Both shells
//! drive the same receptions, so a response means the same through either.

use std::time::Instant;

use super::events::{Event, Events};
use super::response::{Reader, Response};
use crate::LaunchError;

/// Takes a response's bytes as they are read.
pub trait Reception {
    type Output;

    /// Takes the bytes just read; `true` once nothing more is needed.
    fn push(&mut self, bytes: &[u8]) -> Result<bool, LaunchError>;

    /// What was received, once [`Reception::push`] said so or the connection closed.
    fn finish(self) -> Result<Self::Output, LaunchError>;
}

/// Keeps the whole response.
#[derive(Debug, Default)]
pub struct Whole {
    reader: Reader,
    body: Vec<u8>,
}

impl Reception for Whole {
    type Output = Response;

    fn push(&mut self, bytes: &[u8]) -> Result<bool, LaunchError> {
        self.body.extend(self.reader.push(bytes)?);
        Ok(self.reader.is_done())
    }

    fn finish(self) -> Result<Response, LaunchError> {
        let head = self.reader.closed()?;
        let body = String::from_utf8(self.body)
            .map_err(|_| LaunchError::Malformed("a body that is not UTF-8".into()))?;
        Ok(Response { head, body })
    }
}

/// A streamed completion as it arrived: when each event came, when each one carrying a token
/// came, and the text of them all together.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// Every chunk's arrival, the end's and the usage's included.
    pub events: Vec<Instant>,
    /// The arrival of each chunk with text that did not finish the choice.
    pub tokens: Vec<Instant>,
    pub text: String,
}

impl Streamed {
    fn record(&mut self, at: Instant, chunk: &serde_json::Value) {
        self.events.push(at);
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["text"].as_str() {
            self.text.push_str(text);
            if !choice["finish_reason"].is_string() {
                self.tokens.push(at);
            }
        }
    }
}

/// Follows a streamed completion until `data: [DONE]`. An error: a status other than 200 (its
/// status line), an error event, or the connection closed before `[DONE]`.
#[derive(Debug, Default)]
pub struct CompletionStream {
    reader: Reader,
    events: Events,
    streamed: Streamed,
    done: bool,
}

impl Reception for CompletionStream {
    type Output = Streamed;

    fn push(&mut self, bytes: &[u8]) -> Result<bool, LaunchError> {
        let body = self.reader.push(bytes)?;
        if let Some(head) = self.reader.head()
            && head.status != 200
        {
            return Err(LaunchError::Status(head.status_line().to_string()));
        }
        let at = Instant::now();
        for event in self.events.push(&body)? {
            match event {
                Event::Chunk(chunk) => self.streamed.record(at, &chunk),
                Event::Done => {
                    self.done = true;
                    return Ok(true);
                }
            }
        }
        Ok(self.reader.is_done())
    }

    fn finish(self) -> Result<Streamed, LaunchError> {
        if self.done {
            Ok(self.streamed)
        } else {
            Err(LaunchError::Closed("data: [DONE]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed completion's response: one chunk per event, as the gateway writes them.
    fn streamed_response() -> Vec<u8> {
        let events = [
            r#"{"choices":[{"text":"Hi","finish_reason":null}]}"#,
            r#"{"choices":[{"text":"","finish_reason":"stop"}]}"#,
            "[DONE]",
        ];
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for event in events {
            let data = format!("data: {event}\n\n");
            raw.extend(format!("{:x}\r\n{data}\r\n", data.len()).into_bytes());
        }
        raw.extend(b"0\r\n\r\n");
        raw
    }

    #[test]
    fn a_stream_gives_its_text_and_when_each_event_and_token_came() {
        let mut stream = CompletionStream::default();
        let mut complete = false;
        for piece in streamed_response().chunks(7) {
            complete = stream.push(piece).unwrap();
            if complete {
                break;
            }
        }
        assert!(complete);
        let streamed = stream.finish().unwrap();
        assert_eq!(streamed.text, "Hi");
        assert_eq!(streamed.events.len(), 2);
        assert_eq!(streamed.tokens.len(), 1);
    }

    #[test]
    fn a_stream_cut_before_done_is_an_error() {
        let mut stream = CompletionStream::default();
        let raw = streamed_response();
        assert!(!stream.push(&raw[..raw.len() - 30]).unwrap());
        assert!(matches!(stream.finish(), Err(LaunchError::Closed(_))));
    }

    #[test]
    fn another_status_is_an_error_naming_it() {
        let mut stream = CompletionStream::default();
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        match stream.push(refused) {
            Err(LaunchError::Status(line)) => assert_eq!(line, "HTTP/1.1 503 Service Unavailable"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_whole_response_keeps_head_and_decoded_body() {
        let mut whole = Whole::default();
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(whole.push(raw).unwrap());
        let response = whole.finish().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("Transfer-Encoding"), Some("chunked"));
        assert_eq!(response.body, "abc");
    }
}
