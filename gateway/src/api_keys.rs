//! The API keys clients present as `Authorization: Bearer <key>`: an HTTP header on `/v1`, or
//! gRPC metadata on `GatewayService`. Several keys may be valid at once (so one can be rotated
//! while the others serve); a presented key is compared with every one of them in full, in time
//! that does not depend on where it first differs.

use tonic::{Request, Status};

/// The valid keys; none means the APIs are open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys(Vec<String>);

impl ApiKeys {
    /// The non-empty ones of `keys`.
    pub fn new<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> ApiKeys {
        ApiKeys(
            keys.into_iter()
                .map(Into::into)
                .filter(|k: &String| !k.is_empty())
                .collect(),
        )
    }

    /// Whether no key is required.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `authorization` (an `Authorization` value) is `Bearer <one of the keys>`, or no
    /// key is required.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some((scheme, given)) = authorization.and_then(|value| value.split_once(' ')) else {
            return false;
        };
        let given = given.trim();
        let mut matched = false;
        for key in &self.0 {
            matched |= same_secret(given, key);
        }
        scheme.eq_ignore_ascii_case("bearer") && matched
    }

    /// A gRPC interceptor: lets a call through when its `authorization` metadata is admitted,
    /// refuses it with UNAUTHENTICATED otherwise.
    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.admits(authorization) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "Incorrect API key provided: send `authorization: Bearer <key>` metadata",
            ))
        }
    }
}

/// Compares in time that depends only on the expected key's length, not on where the given one
/// first differs.
fn same_secret(given: &str, expected: &str) -> bool {
    let given = given.as_bytes();
    let mut difference = given.len() ^ expected.len();
    for (i, &byte) in expected.as_bytes().iter().enumerate() {
        difference |= usize::from(given.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_of_several_keys_is_admitted_as_a_bearer_token() {
        let keys = ApiKeys::new(["sk-old", "sk-new", ""]);
        assert!(!keys.is_open());
        for ok in ["Bearer sk-old", "bearer sk-new", "Bearer  sk-new "] {
            assert!(keys.admits(Some(ok)), "{ok}");
        }
        for refused in [
            None,
            Some(""),
            Some("sk-old"),
            Some("Basic sk-old"),
            Some("Bearer sk-ol"),
            Some("Bearer sk-old2"),
            Some("Bearer "),
        ] {
            assert!(!keys.admits(refused), "{refused:?}");
        }
        assert!(ApiKeys::new([""]).admits(None), "no key: open");
    }

    #[test]
    fn grpc_calls_need_the_key_in_their_metadata() {
        let keys = ApiKeys::new(["sk-secret"]);
        let status = keys.check(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer sk-secret".parse().unwrap());
        assert!(keys.check(request).is_ok());
        assert!(ApiKeys::default().check(Request::new(())).is_ok());
    }
}
