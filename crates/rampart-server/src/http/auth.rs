//! The admin token that guards the write endpoints (invalidation), and the
//! layer that checks it: `Authorization: Bearer <token>`, 401 without it,
//! 403 with another one.
//!
//! Where the token comes from, first match wins: the `RAMPART_ADMIN_TOKEN`
//! environment variable, the file named by `server.admin_token_file`, or a
//! token generated on first start into `<data_dir>/admin-token` (owner-only)
//! and reused on later starts. The token itself is never printed or logged:
//! the trace layer does not record headers, and `Debug` redacts it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::Error;
use crate::start_error::StartError;

/// The name of the generated token's file in the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// Random bytes in a generated token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// Where the admin token came from, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The `RAMPART_ADMIN_TOKEN` environment variable.
    Environment,
    /// `server.admin_token_file`.
    File(PathBuf),
    /// Generated on this start into the data directory.
    Generated(PathBuf),
    /// Generated on an earlier start, read back from the data directory.
    Reused(PathBuf),
}

impl std::fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenOrigin::Environment => write!(f, "from RAMPART_ADMIN_TOKEN"),
            TokenOrigin::File(path) => {
                write!(f, "read from {} (server.admin_token_file)", path.display())
            }
            TokenOrigin::Generated(path) => write!(f, "generated into {}", path.display()),
            TokenOrigin::Reused(path) => write!(f, "in {}", path.display()),
        }
    }
}

/// The admin token. `Debug` shows where it came from, never the token.
pub struct AdminToken {
    secret: String,
    origin: TokenOrigin,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("secret", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl AdminToken {
    /// The token for `config`: the environment's, the configured file's, or
    /// the data directory's (generated on first start).
    pub fn resolve(config: &Config) -> Result<AdminToken, StartError> {
        if let Some(secret) = &config.server.admin_token {
            return Ok(AdminToken {
                secret: secret.expose().trim().to_owned(),
                origin: TokenOrigin::Environment,
            });
        }
        if let Some(path) = &config.server.admin_token_file {
            let secret = read_token(path).map_err(|message| StartError::Config {
                file: path.display().to_string(),
                message: format!("server.admin_token_file: {message}"),
            })?;
            warn_if_shared(path);
            return Ok(AdminToken {
                secret,
                origin: TokenOrigin::File(path.clone()),
            });
        }
        let path = config.data_dir.join(TOKEN_FILE);
        let (secret, created) = generated(&path).map_err(|message| StartError::Config {
            file: path.display().to_string(),
            message: format!("admin token: {message}"),
        })?;
        let origin = if created {
            TokenOrigin::Generated(path)
        } else {
            warn_if_shared(&path);
            TokenOrigin::Reused(path)
        };
        Ok(AdminToken { secret, origin })
    }

    /// Where the token came from.
    pub fn origin(&self) -> &TokenOrigin {
        &self.origin
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where the first differing byte is (so the token cannot be guessed a
    /// byte at a time by timing answers). Only the length can leak, and a
    /// generated token's length is public anyway.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.secret.as_bytes().ct_eq(presented).into()
    }
}

/// The layer on write routes: the request goes on only with the token.
pub async fn require_admin(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    match bearer(request.headers()) {
        None => Err(Error::Unauthorized),
        Some(presented) if token.matches(presented) => Ok(next.run(request).await),
        Some(_) => Err(Error::Forbidden),
    }
}

/// The credentials of `Authorization: Bearer <credentials>` (the scheme is
/// case-insensitive, RFC 9110 §11.1), if the header is there and well formed.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// A token file's content, trimmed; an empty file is an error (it would
/// make every request's empty token match).
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(token.to_owned())
}

/// Reads the token at `path`, or creates it there with a fresh random one
/// (owner-only from the moment it exists). Returns the token and whether
/// this call created it.
fn generated(path: &Path) -> Result<(String, bool), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is given to open(2), so there is no moment in which
        // another user could open the file before a chmod.
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            let token = new_token()?;
            // One write of the token and its newline: a concurrent first
            // start reading the file waits for the newline (below).
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process may have created it an instant ago and not yet
            // written it: wait (bounded) for the complete line.
            for _ in 0..50 {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if text.ends_with('\n') || text.trim().len() >= 2 * TOKEN_BYTES {
                    return read_token(path).map(|token| (token, false)).map_err(|e| {
                        format!("{}: {e}; delete it to generate a new one", path.display())
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            read_token(path)
                .map(|token| (token, false))
                .map_err(|e| format!("{}: {e}; delete it to generate a new one", path.display()))
        }
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// A new token: [`TOKEN_BYTES`] from the operating system's RNG, hex.
fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Logs a warning when others than the owner may read the token file.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the admin token file is readable by others than its owner (chmod 600 it)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(bearer(&with_authorization("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(
            bearer(&with_authorization("bearer  abc ")),
            Some(&b"abc"[..])
        );
        assert_eq!(bearer(&with_authorization("Basic abc")), None);
        assert_eq!(bearer(&with_authorization("Bearerabc")), None);
        assert_eq!(bearer(&with_authorization("Bearer ")), None);
        assert_eq!(bearer(&with_authorization("Bear")), None);
    }

    #[test]
    fn matching_is_exact() {
        let token = AdminToken {
            secret: "s3cret-token".into(),
            origin: TokenOrigin::Environment,
        };
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret-token2"));
        assert!(!token.matches(b""));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn new_tokens_are_long_hex_and_differ() {
        let (a, b) = (new_token().expect("rng"), new_token().expect("rng"));
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
