use std::fmt;

/// Errors from setting up sockets and endpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text of an endpoint is not usable (a usage error: exit code 2).
    #[error("bad endpoint {text:?}: {reason}")]
    Endpoint { text: String, reason: String },
    /// `bind` failed: port in use, address not on this host, ... (exit code 2).
    #[error("cannot bind {endpoint} ({socket}): {reason}")]
    Bind {
        endpoint: String,
        socket: &'static str,
        reason: String,
    },
    /// `connect` failed before any traffic (exit code 2).
    #[error("cannot connect to {endpoint} ({socket}): {reason}")]
    Connect {
        endpoint: String,
        socket: &'static str,
        reason: String,
    },
    /// A flag's value cannot be used (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Any other libzmq call failed.
    #[error("{context}")]
    Zmq { context: String, source: zmq::Error },
}

impl Error {
    /// Whether this is the user's to fix on the command line (exit code 2).
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Zmq { .. })
    }

    /// Wraps a libzmq error with what was being done.
    pub fn zmq(context: impl fmt::Display, source: zmq::Error) -> Self {
        Error::Zmq {
            context: context.to_string(),
            source,
        }
    }
}
