//! Entity tags as the service's versioned resources spell them: the
//! version number in double quotes (`"7"`), the same on the way out
//! (`ETag`) and on the way back (`If-Match`). Stock and the config center
//! both version their rows this way; what a missing or bad header means
//! stays with each route.

use std::fmt::Display;
use std::str::FromStr;

use axum::http::HeaderValue;

/// The `ETag` of `version`: `"N"`.
pub fn etag(version: impl Display) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` value names (`"N"`, already trimmed), or
/// `None` when it is not a quoted number.
pub fn quoted_version<T: FromStr>(tag: &str) -> Option<T> {
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_goes_out_and_comes_back_quoted() {
        assert_eq!(etag(7u64), HeaderValue::from_static("\"7\""));
        assert_eq!(quoted_version::<u64>("\"7\""), Some(7));
        assert_eq!(quoted_version::<i64>("7"), None);
        assert_eq!(quoted_version::<u64>("\"x\""), None);
        assert_eq!(quoted_version::<u64>("W/\"7\""), None);
    }
}
