//! What can stop the service from starting (or a CLI command from running):
//! a bad config, an unreachable database, a port in use. Printed once to
//! stderr by `main`, naming the file, field or address; never an HTTP
//! answer. Per-request failures are `error::Error`, a different type.

/// Why `rampart` could not start or finish a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A config file (or the embedded one), a flag or a variable is invalid.
    #[error("config {file}: {message}")]
    Config { file: String, message: String },

    /// The database could not be reached or a query failed.
    #[error("database: {0}")]
    Database(String),

    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },

    /// A guard or the Redis tier could not be set up.
    #[error(transparent)]
    Guard(#[from] rampart::Error),

    /// A command's own input is wrong (e.g. `drill`'s target).
    #[error("{0}")]
    Usage(String),

    /// `rampart drill` ran, and the service missed its objective
    /// (`--slo`, `--max-p99`, `--max-error-rate`): exit status 3.
    #[error("{0}")]
    SloMissed(String),
}

impl StartError {
    /// The process exit status: 3 for a missed objective
    /// ([`crate::drill::SLO_EXIT_CODE`]), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::SloMissed(_) => crate::drill::SLO_EXIT_CODE,
            _ => 1,
        }
    }
}
