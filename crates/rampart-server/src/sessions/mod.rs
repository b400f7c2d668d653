//! Sessions: user-facing log-in state behind an opaque bearer token.
//!
//! `POST /v1/sessions` makes one and answers its token once; the token is
//! then the caller's credential (`Authorization: Bearer …`) for
//! `GET`/`PATCH`/`DELETE /v1/sessions/current` and
//! `POST /v1/sessions/current/rotate`. Stores key sessions by the SHA-256 of
//! the token, so neither a dump of the store nor a log line holds a usable
//! token. Where sessions live is a [`store::SessionStore`]: in this process
//! ([`memory::MemoryStore`], the embedded default) or in Redis
//! ([`redis::RedisStore`], shared by every instance) when Redis is
//! configured.
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | `[sessions]`: idle and absolute timeouts, the maximum, the data bound |
//! | `token.rs` | the token (256 bits of the OS CSPRNG), its `SessionId` hash, the bearer header |
//! | `store.rs` | the `SessionStore` trait, `Session`, the one merge rule and the expiry rule |
//! | `memory.rs` | the in-process store over `scc::HashMap` (chosen by `benches/locks.rs`), sweeper, maximum |
//! | `redis.rs` | the Redis store: one hash per session, TTL, Lua scripts |
//! | `routes.rs` | the HTTP routes and their OpenAPI table |

pub mod config;
pub mod memory;
pub mod redis;
pub mod routes;
pub mod store;
pub mod token;

pub use config::SessionsConfig;
pub use routes::{routes, ROUTES};
