//! The task kinds a worker serves (`--kinds`, or its handler's `kinds()`),
//! kept at its door: a task of another kind is answered `rejected`, never
//! run.
//!
//! In credit dispatch the ventilator deals a worker only the kinds it
//! declared, so this never fires; in push dispatch a PUSH cannot choose,
//! and a task that reaches a worker that did not declare its kind fails
//! in plain words instead of running on the wrong handler.

use common::kinds;
use common::work::{Outcome, Status, Work};

use crate::{Handler, TaskInfo};

/// A handler behind the kinds its worker declared (`None`: the built-in
/// kinds, which need no check: a task that names a kind of its own comes
/// through [`Handler::run_named`]).
pub(crate) struct Serving<H> {
    pub(crate) inner: H,
    pub(crate) kinds: Option<Vec<String>>,
}

impl<H> Serving<H> {
    fn refuse(&self, kind: &str) -> Outcome {
        let serves = match &self.kinds {
            Some(list) => list.join(", "),
            None => format!("the built-in kinds ({})", kinds::BUILTIN.join(", ")),
        };
        Outcome::failed(
            Status::Rejected,
            format!(
                "this worker does not serve task kind {kind} (it serves {serves}): a PUSH cannot choose its worker; start workers that serve it (--kinds {kind}), or use --dispatch credit"
            ),
        )
    }
}

impl<H: Handler> Handler for Serving<H> {
    fn run(&self, task: &TaskInfo<'_>, work: &Work) -> Outcome {
        match &self.kinds {
            Some(list) if !list.iter().any(|k| k == work.kind()) => self.refuse(work.kind()),
            _ => self.inner.run(task, work),
        }
    }

    fn kinds(&self) -> Option<Vec<String>> {
        self.kinds.clone()
    }

    fn run_named(&self, task: &TaskInfo<'_>, kind: &str, work: &Work) -> Outcome {
        if kinds::serves(self.kinds.as_deref(), kind) {
            self.inner.run_named(task, kind, work)
        } else {
            self.refuse(kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Shutdown;

    #[test]
    fn a_kind_not_declared_is_rejected_and_never_run() {
        let stop = Shutdown::new();
        let info = TaskInfo {
            batch: 1,
            task: 0,
            attempt: 1,
            stop: &stop,
        };
        let ran = std::sync::atomic::AtomicU32::new(0);
        let handler = |_: &TaskInfo<'_>, _: &Work| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Outcome::ok("ran")
        };
        let data = Work::Data {
            data: serde_json::json!(1),
        };
        let a = Serving {
            inner: &handler,
            kinds: Some(vec!["A".into()]),
        };
        assert_eq!(a.run_named(&info, "A", &data).status, Status::Ok);
        let b = a.run_named(&info, "B", &data);
        assert_eq!(b.status, Status::Rejected);
        assert!(String::from_utf8_lossy(&b.error).contains("kind B"));
        assert_eq!(a.run(&info, &Work::Noop).status, Status::Rejected);
        // Declaring nothing: the built-in kinds, and no named kind.
        let builtin = Serving {
            inner: &handler,
            kinds: None,
        };
        assert_eq!(builtin.run(&info, &Work::Noop).status, Status::Ok);
        assert_eq!(
            builtin.run_named(&info, "A", &data).status,
            Status::Rejected
        );
        assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
