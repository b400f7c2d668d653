//! The session token and what a store keeps instead of it.
//!
//! A token is 256 bits from the operating system's CSPRNG, URL-safe base64
//! without padding (43 characters). It is answered once, at creation or
//! rotation; stores key the session by [`SessionId`], the SHA-256 of the
//! token's text, so a dump of the store yields nothing a caller could
//! present. Checking a token is one hash and one map lookup, whether it
//! is right or wrong: no byte-by-byte compare of a secret that could end
//! early.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// A freshly made token. `Debug` never shows it.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A new token from the OS CSPRNG.
    pub fn generate() -> Result<Token, Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut bytes).map_err(|e| Error::Entropy(e.to_string()))?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token's text, to answer once.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keys this token's session by.
    pub fn id(&self) -> SessionId {
        SessionId::of(self.0.as_bytes())
    }
}

/// The SHA-256 of a token: a session's key in every store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({})", self.hex())
    }
}

impl SessionId {
    /// The id of whatever token was presented (a malformed one included:
    /// it is hashed and looked up like any other, and found nowhere).
    pub fn of(presented: &[u8]) -> SessionId {
        SessionId(Sha256::digest(presented).into())
    }

    /// Lower-case hex, for Redis key names.
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// The session id of the request's `Authorization: Bearer <token>`;
/// [`Error::NoSession`] (401) without one.
pub fn bearer(headers: &HeaderMap) -> Result<SessionId, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Error::NoSession("no Authorization header"))?;
    let bytes = value.as_bytes();
    let scheme = b"bearer ";
    if bytes.len() <= scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Error::NoSession(
            "the Authorization header is not `Bearer <token>`",
        ));
    }
    Ok(SessionId::of(bytes[scheme.len()..].trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_url_safe_and_distinct() {
        let a = Token::generate().expect("token");
        let b = Token::generate().expect("token");
        assert_eq!(a.as_str().len(), 43);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(URL_SAFE_NO_PAD.decode(a.as_str()).expect("b64").len(), 32);
        assert_eq!(format!("{a:?}"), "Token(<redacted>)");
    }

    #[test]
    fn the_id_is_the_sha256_of_the_token_text() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            SessionId::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Err(Error::NoSession(_))));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            headers.insert(header::AUTHORIZATION, bad.parse().expect("header"));
            assert!(
                matches!(bearer(&headers), Err(Error::NoSession(_))),
                "{bad}"
            );
        }
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().expect("header"));
        assert_eq!(bearer(&headers).expect("id"), SessionId::of(b"abc"));
    }
}
