//! The sink's errors.

use std::path::PathBuf;

/// The sink's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Sockets and endpoints: a bad endpoint, a port in use, security set-up.
    #[error(transparent)]
    Setup(#[from] common::Error),
    /// The output (or the report file) cannot be opened or written.
    #[error("cannot open the output {path}")]
    OpenOutput {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing results failed (a full disk, a closed pipe).
    #[error("cannot write results")]
    Write(#[from] std::io::Error),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// `--resume` found something in `--output` that is not one batch's
    /// results.
    #[error("cannot resume from {path}: line {line}: {reason}")]
    Resume {
        /// The output read back.
        path: PathBuf,
        /// Its line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `sink plot`: its input cannot be read, or holds no picture (an
    /// empty file, a line that is not a result, a bad CSV row).
    #[error("cannot plot {path}: {reason}")]
    Plot {
        /// The input.
        path: PathBuf,
        /// What is wrong with it (naming the line, when one is).
        reason: String,
    },
    /// `sink plot`: the drawing library failed.
    #[error("cannot draw the picture: {0}")]
    Draw(String),
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::OpenOutput { .. }
            | Error::Usage(_)
            | Error::Resume { .. }
            | Error::Plot { .. } => true,
            Error::Write(_) | Error::Draw(_) => false,
        }
    }
}
