use std::fmt;

/// Errors from setting up sockets and endpoints: all but [`Error::Zmq`]
/// are the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text of an endpoint is not usable (a usage error: exit code 2).
    #[error("bad endpoint {text:?}: {reason}")]
    Endpoint {
        /// The text as given.
        text: String,
        /// What is wrong with it, and what to write instead.
        reason: String,
    },
    /// `bind` failed: port in use, address not on this host, ... (exit code 2).
    #[error("cannot bind {endpoint} ({socket}): {reason}")]
    Bind {
        /// The address it tried to bind.
        endpoint: String,
        /// Which socket (`tasks`, `results`, ...).
        socket: &'static str,
        /// libzmq's errno in words.
        reason: String,
    },
    /// `connect` failed before any traffic (exit code 2).
    #[error("cannot connect to {endpoint} ({socket}): {reason}")]
    Connect {
        /// The address it tried to connect to.
        endpoint: String,
        /// Which socket (`tasks`, `results`, ...).
        socket: &'static str,
        /// libzmq's errno, or the name that does not resolve, in words.
        reason: String,
    },
    /// A flag's value cannot be used (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Any other libzmq call failed.
    #[error("{context}")]
    Zmq {
        /// What was being done.
        context: String,
        /// libzmq's error.
        source: zmq::Error,
    },
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
