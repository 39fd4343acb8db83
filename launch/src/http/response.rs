//! An HTTP/1.1 response read as its bytes arrive: the head (status line and headers) parsed,
//! then the body decoded by its framing — `Content-Length`, chunked, or until the server closes
//! the connection. No IO: the shells push what they read and say when the connection closed.

use crate::LaunchError;

/// A response's status line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// The head as it came, without the blank line that ends it.
    pub text: String,
    /// Each header, its name in lower case, its value trimmed.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Parses a head (without its closing blank line).
    pub fn parse(text: &str) -> Result<Head, LaunchError> {
        let malformed = |what: &str| LaunchError::Malformed(format!("{what}: {text:?}"));
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed("no status line"))?;
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').ok_or_else(|| malformed("a header"))?;
                Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            })
            .collect::<Result<_, LaunchError>>()?;
        Ok(Head {
            status,
            text: text.to_string(),
            headers,
        })
    }

    /// The value of the header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The status line.
    pub fn status_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    fn framing(&self) -> Result<Framing, LaunchError> {
        if self
            .header("transfer-encoding")
            .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"))
        {
            return Ok(Framing::Chunked(Chunk::Size));
        }
        match self.header("content-length") {
            Some(length) => length
                .parse()
                .map(Framing::Length)
                .map_err(|_| LaunchError::Malformed(format!("Content-Length {length:?}"))),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// A whole response: its head and its decoded body.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: Head,
    pub body: String,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The value of the header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// How the body's end is found, and how far decoding has come.
#[derive(Debug, Default)]
enum Framing {
    /// The head is not complete yet.
    #[default]
    Head,
    /// This many bytes of the body are still to come.
    Length(usize),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's decoding stands.
#[derive(Debug)]
enum Chunk {
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    End,
    /// After the last (empty) chunk: trailer lines up to a blank one.
    Trailer,
    Done,
}

/// Reads one response from the bytes pushed into it.
#[derive(Debug, Default)]
pub struct Reader {
    pending: Vec<u8>,
    head: Option<Head>,
    framing: Framing,
}

impl Reader {
    /// Takes the next bytes read; the body bytes they complete, decoded.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, LaunchError> {
        self.pending.extend_from_slice(bytes);
        let mut body = Vec::new();
        while self.step(&mut body)? {}
        Ok(body)
    }

    /// The head, once it has come.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Whether the whole body has come.
    pub fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    /// The head of a response the connection's end completed: an error when the connection
    /// closed before the head or the body did.
    pub fn closed(self) -> Result<Head, LaunchError> {
        match (self.framing, self.head) {
            (Framing::Done | Framing::UntilClose, Some(head)) => Ok(head),
            (Framing::Head, _) | (_, None) => Err(LaunchError::Closed("the response's head")),
            _ => Err(LaunchError::Closed("the end of the body")),
        }
    }

    /// One step of decoding; whether it made progress.
    fn step(&mut self, body: &mut Vec<u8>) -> Result<bool, LaunchError> {
        match &mut self.framing {
            Framing::Head => {
                let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                    return Ok(false);
                };
                let text = std::str::from_utf8(&self.pending[..end])
                    .map_err(|_| LaunchError::Malformed("a head that is not UTF-8".into()))?;
                let head = Head::parse(text)?;
                self.framing = head.framing()?;
                self.head = Some(head);
                self.pending.drain(..end + 4);
            }
            Framing::Length(0) => self.framing = Framing::Done,
            Framing::Length(left) => return Ok(take(&mut self.pending, left, body)),
            Framing::Chunked(chunk) => {
                let progressed = step_chunk(chunk, &mut self.pending, body)?;
                if matches!(chunk, Chunk::Done) {
                    self.framing = Framing::Done;
                }
                return Ok(progressed);
            }
            Framing::UntilClose => {
                body.append(&mut self.pending);
                return Ok(false);
            }
            Framing::Done => return Ok(false),
        }
        Ok(true)
    }
}

/// One step of a chunked body; whether it made progress. The last chunk ends the framing.
fn step_chunk(
    chunk: &mut Chunk,
    pending: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<bool, LaunchError> {
    match chunk {
        Chunk::Size | Chunk::Trailer => {
            let Some(end) = find(pending, b"\r\n") else {
                return Ok(false);
            };
            let line: Vec<u8> = pending.drain(..end + 2).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if matches!(chunk, Chunk::Trailer) {
                if line.is_empty() {
                    *chunk = Chunk::Done;
                }
                return Ok(true);
            }
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| LaunchError::Malformed(format!("a chunk size {line:?}")))?;
            *chunk = if size == 0 {
                Chunk::Trailer
            } else {
                Chunk::Data(size)
            };
        }
        Chunk::Data(0) => *chunk = Chunk::End,
        Chunk::Data(left) => return Ok(take(pending, left, body)),
        Chunk::End => {
            if pending.len() < 2 {
                return Ok(false);
            }
            if &pending[..2] != b"\r\n" {
                return Err(LaunchError::Malformed("a chunk not ended by CRLF".into()));
            }
            pending.drain(..2);
            *chunk = Chunk::Size;
        }
        Chunk::Done => return Ok(false),
    }
    Ok(true)
}

/// Moves up to `left` pending bytes to `body`; whether it moved any.
fn take(pending: &mut Vec<u8>, left: &mut usize, body: &mut Vec<u8>) -> bool {
    let taken = (*left).min(pending.len());
    body.extend(pending.drain(..taken));
    *left -= taken;
    taken > 0
}

/// Where `needle` first stands in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `raw` one byte at a time, as the slowest network would deliver it.
    fn read_bytewise(raw: &[u8]) -> (Reader, Vec<u8>) {
        let mut reader = Reader::default();
        let mut body = Vec::new();
        for byte in raw {
            body.extend(reader.push(std::slice::from_ref(byte)).unwrap());
        }
        (reader, body)
    }

    #[test]
    fn a_head_gives_its_status_and_headers_in_lower_case() {
        let head =
            Head::parse("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nX-A:b").unwrap();
        assert_eq!(head.status, 503);
        assert_eq!(head.status_line(), "HTTP/1.1 503 Service Unavailable");
        assert_eq!(head.header("retry-after"), Some("2"));
        assert_eq!(head.header("X-A"), Some("b"));
        assert_eq!(head.headers[0].0, "retry-after");
        assert!(Head::parse("nonsense").is_err());
        assert!(Head::parse("HTTP/1.1 200 OK\r\nno colon").is_err());
    }

    #[test]
    fn a_body_of_given_length_ends_without_the_connection_closing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more";
        let (reader, body) = read_bytewise(raw);
        assert!(reader.is_done());
        assert_eq!(body, b"hello");
        assert_eq!(reader.closed().unwrap().status, 200);
    }

    #[test]
    fn a_chunked_body_is_decoded_across_any_split() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let (reader, body) = read_bytewise(raw);
        assert!(reader.is_done());
        assert_eq!(body, b"hello, world");
        let mut whole = Reader::default();
        assert_eq!(whole.push(raw).unwrap(), b"hello, world");
        assert!(whole.is_done());
    }

    #[test]
    fn a_body_without_length_ends_when_the_connection_closes() {
        let (reader, body) = read_bytewise(b"HTTP/1.1 200 OK\r\n\r\nall of it");
        assert!(!reader.is_done());
        assert_eq!(body, b"all of it");
        assert!(reader.closed().is_ok());
    }

    #[test]
    fn a_connection_closed_early_is_an_error() {
        let (reader, _) = read_bytewise(b"HTTP/1.1 200 OK\r\nContent-Le");
        assert!(matches!(reader.closed(), Err(LaunchError::Closed(_))));
        let (reader, _) = read_bytewise(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf");
        assert!(matches!(reader.closed(), Err(LaunchError::Closed(_))));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        let (reader, body) = read_bytewise(chunked);
        assert_eq!(body, b"hel");
        assert!(matches!(reader.closed(), Err(LaunchError::Closed(_))));
    }

    #[test]
    fn malformed_framing_is_refused() {
        let mut reader = Reader::default();
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            reader.push(bad_size),
            Err(LaunchError::Malformed(_))
        ));
        let mut reader = Reader::default();
        let bad_end = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY";
        assert!(matches!(
            reader.push(bad_end),
            Err(LaunchError::Malformed(_))
        ));
        let mut reader = Reader::default();
        let bad_length = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n";
        assert!(matches!(
            reader.push(bad_length),
            Err(LaunchError::Malformed(_))
        ));
    }
}
