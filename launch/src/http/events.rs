//! Server-sent events in a decoded body: blocks ended by a blank line, their `data:` lines joined;
//! `[DONE]` ends a stream, a JSON object with an `error` is the server's failure, anything else a
//! chunk. No IO.

use serde_json::Value;

use super::response::find;
use crate::LaunchError;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Chunk(Value),
    Done,
}

/// Splits a body into events as its bytes arrive.
#[derive(Debug, Default)]
pub struct Events {
    pending: Vec<u8>,
}

impl Events {
    /// Takes the next decoded body bytes; the events they complete, in order. An error event is
    /// an error ([`LaunchError::ErrorEvent`], with the event as it came).
    pub fn push(&mut self, body: &[u8]) -> Result<Vec<Event>, LaunchError> {
        self.pending.extend_from_slice(body);
        let mut events = Vec::new();
        while let Some(end) = find(&self.pending, b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let block = std::str::from_utf8(&block)
                .map_err(|_| LaunchError::Malformed("an event that is not UTF-8".into()))?;
            events.extend(parse(block)?);
        }
        Ok(events)
    }
}

/// The event in one block; `None` for a block without data (a comment, a keep-alive).
fn parse(block: &str) -> Result<Option<Event>, LaunchError> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.strip_prefix(' ').unwrap_or(data))
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    let data = data.join("\n");
    if data == "[DONE]" {
        return Ok(Some(Event::Done));
    }
    let value: Value = serde_json::from_str(&data)
        .map_err(|e| LaunchError::Malformed(format!("event {data}: {e}")))?;
    if !value["error"].is_null() {
        return Err(LaunchError::ErrorEvent(data));
    }
    Ok(Some(Event::Chunk(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_complete_across_pushes_and_skip_blocks_without_data() {
        let mut events = Events::default();
        assert_eq!(events.push(b"data: {\"a\":").unwrap(), vec![]);
        let got = events
            .push(b"1}\n\n: keep-alive\n\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![Event::Chunk(serde_json::json!({"a": 1})), Event::Done]
        );
    }

    #[test]
    fn an_error_event_is_an_error_with_the_event_as_it_came() {
        let mut events = Events::default();
        let block = b"data: {\"error\": {\"message\": \"lost\"}}\n\n";
        match events.push(block) {
            Err(LaunchError::ErrorEvent(data)) => {
                assert_eq!(data, "{\"error\": {\"message\": \"lost\"}}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_event_that_is_not_json_is_malformed() {
        let mut events = Events::default();
        assert!(matches!(
            events.push(b"data: {nope\n\n"),
            Err(LaunchError::Malformed(_))
        ));
    }
}
