//! The ventilator's one error type.

use std::time::Duration;

use crate::{input, plan};

/// Why a batch could not be sent. Usage errors (a bad input, a plan that
/// could never finish, a batch the sink already holds without `--resume`)
/// make the binary exit 2, the others 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Sockets or endpoints could not be set up.
    #[error(transparent)]
    Setup(#[from] common::Error),
    /// The input could not be read as tasks.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The dependencies cannot be met (a cycle, an unknown task, a later
    /// stage).
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// Flags or a batch that make no sense.
    #[error("{0}")]
    Usage(String),
    /// The sink never answered START.
    #[error(
        "no sink answered on {endpoint} within {waited:?}{refused}: start the sink, or point --feedback-endpoint at it"
    )]
    NoSink {
        /// The feedback endpoint tried.
        endpoint: String,
        /// How long we waited (`--wait`).
        waited: Duration,
        /// Why the sink turned us away, when it did (with its parentheses),
        /// or nothing.
        refused: String,
    },
    /// The sink collects a batch of other tasks.
    #[error(
        "the sink is collecting another batch ({0:016x}); wait for it to finish or use another sink"
    )]
    SinkBusy(u64),
    /// No worker became ready within `--wait`.
    #[error("no worker became ready within {waited:?}: are workers connected to {endpoint}?")]
    NoWorkers {
        /// The task endpoint.
        endpoint: String,
        /// How long we waited (`--wait`).
        waited: Duration,
    },
    /// Push dispatch: a ready worker does not serve the batch's kind, and
    /// a PUSH would deal it tasks; says which.
    #[error("{0}")]
    KindUnserved(String),
    /// The sink will not collect this batch, and said why.
    #[error("the sink refused the batch: {0}")]
    Refused(String),
    /// The sink holds results of this very batch, and `--resume` was not
    /// given.
    #[error(
        "the sink already holds {held} results of this batch ({batch:016x}, the same tasks): pass --resume to send only the {missing} missing tasks, or give the sink a new output"
    )]
    Resume {
        /// The batch id (a fingerprint of the tasks).
        batch: u64,
        /// Results the sink holds.
        held: u64,
        /// Tasks it still needs.
        missing: u64,
    },
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::Input(_) | Error::Plan(_) | Error::Usage(_) | Error::Resume { .. } => true,
            _ => false,
        }
    }
}
