//! The handlers' extractors: axum's `Path` and `Query`, with their
//! rejections turned into the crate's [`Error`] so that a bad
//! percent-encoding or an undecodable query string is answered like every
//! other error (JSON `{error, code, detail}`), not with axum's text/plain.

use std::borrow::Cow;

use axum::extract::{FromRequestParts, Path as AxumPath, Query as AxumQuery};
use axum::http::request::Parts;
use axum::http::Uri;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Path parameters; a rejection is [`Error::BadPath`].
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumPath::<T>::from_request_parts(parts, state).await {
            Ok(AxumPath(value)) => Ok(Path(value)),
            // axum's message may quote the segment; error.rs bounds every detail.
            Err(rejection) => Err(Error::BadPath(rejection.body_text())),
        }
    }
}

/// Query parameters; a rejection is [`Error::BadQuery`].
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumQuery::<T>::from_request_parts(parts, state).await {
            Ok(AxumQuery(value)) => Ok(Query(value)),
            Err(rejection) => Err(Error::BadQuery(rejection.body_text())),
        }
    }
}

/// The request's URI, moved out of the request rather than copied, for
/// handlers that read their segments with [`segments_after`]: the cache's
/// GET route, where axum's `Path<(String, String)>` cost two allocations
/// per hit.
pub struct RawUri(pub Uri);

impl<S: Send + Sync> FromRequestParts<S> for RawUri {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The handler is the request's last use of its URI.
        Ok(RawUri(std::mem::take(&mut parts.uri)))
    }
}

/// The `N` segments of `path` after `prefix`, percent-decoded (borrowed
/// when there is nothing to decode): `/v1/r/users/42` after `/v1/r/` is
/// `["users", "42"]`. The router has matched the route already, so the
/// shape is known; a segment that does not decode to UTF-8 is
/// [`Error::BadPath`], as axum's `Path` would answer.
pub fn segments_after<'a, const N: usize>(
    path: &'a str,
    prefix: &str,
) -> Result<[Cow<'a, str>; N], Error> {
    let mut rest = path.strip_prefix(prefix).unwrap_or(path).split('/');
    let mut decode = || {
        let raw = rest.next().unwrap_or("");
        // A URI's path is ASCII: without a `%` there is nothing to decode
        // (nearly every key), and no UTF-8 check to pay for.
        if !raw.contains('%') {
            return Ok(Cow::Borrowed(raw));
        }
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Error::BadPath(format!("a path segment is not UTF-8 once decoded: {raw}")))
    };
    let mut segments: [Cow<'a, str>; N] = std::array::from_fn(|_| Cow::Borrowed(""));
    for segment in &mut segments {
        *segment = decode()?;
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_split_and_decoded() {
        let [a, b] = segments_after::<2>("/v1/r/users/42", "/v1/r/").expect("plain");
        assert_eq!((&*a, &*b), ("users", "42"));
        assert!(matches!(a, Cow::Borrowed(_)));
        let [a, b] = segments_after::<2>("/v1/r/us%65rs/a%2Fb%20c", "/v1/r/").expect("encoded");
        assert_eq!((&*a, &*b), ("users", "a/b c"));
        let [k] = segments_after::<1>("/v1/r/users", "/v1/r/").expect("one");
        assert_eq!(&*k, "users");
        assert!(matches!(
            segments_after::<2>("/v1/r/users/%FF", "/v1/r/"),
            Err(Error::BadPath(_))
        ));
    }
}
