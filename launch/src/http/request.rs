//! An HTTP/1.1 request as it goes on the wire: one per connection (`Connection: close`), with
//! its length always given. Building it does no IO.

/// A request: method, path, headers and body.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    /// `method path` with no headers of its own and an empty body.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// `POST path` with a JSON `body`, as it is.
    pub fn post(path: &str, body: impl Into<String>) -> Request {
        Request::new("POST", path)
            .header("Content-Type", "application/json")
            .body(body)
    }

    /// The request with the header `name: value` added.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The request with `body` as its body.
    pub fn body(mut self, body: impl Into<String>) -> Request {
        self.body = body.into();
        self
    }

    /// The path it asks for.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The bytes to send to `host` (the `Host` header).
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut text = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!(
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        ));
        text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_carries_its_type_length_and_body() {
        let bytes = Request::post("/v1/completions", "{}").to_bytes("127.0.0.1:80");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn headers_follow_in_the_order_given() {
        let request = Request::get("/v1/models")
            .header("authorization", "Bearer k")
            .header("x-a", "1");
        let text = String::from_utf8(request.to_bytes("h")).unwrap();
        assert!(
            text.contains("authorization: Bearer k\r\nx-a: 1\r\nContent-Length: 0\r\n\r\n"),
            "{text}"
        );
        assert!(text.starts_with("GET /v1/models HTTP/1.1\r\n"), "{text}");
    }
}
