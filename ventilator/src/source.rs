//! Your own code at the ventilator's end: a [`Source`] makes the batch's
//! tasks, so a batch need not be written to a file first.
//! [`crate::Ventilator::run_source`] and [`crate::run_source`] run one.
//!
//! **When the source is called.** The ventilator asks it for tasks until
//! it says there are no more, and only then announces the batch. A batch
//! is announced with its size (the sink counts results up to it to know
//! the batch is complete) and with its id, a fingerprint of every task
//! ([`crate::Plan::fingerprint`]), so the whole batch must be known before
//! the first task goes out. This costs no memory the ventilator would not
//! spend anyway: it keeps every task until the sink acknowledges its
//! result, to send it again if its worker dies.
//!
//! **The batch id and `--resume`.** The id is the tasks' fingerprint, as
//! for an input file: a source that gives the same tasks gives the same
//! batch. So a ventilator restarted with `--resume` (or a sink restarted
//! with its `--resume`) carries the batch on only if the source gives the
//! same tasks again, in the same order: list files sorted, seed a random
//! generator, and so on. A source whose tasks change between runs makes
//! a new batch each time; a sink still collecting the old one turns it
//! away ("the sink is collecting another batch").
//!
//! **Dependencies and kinds.** A [`Task`] may carry an id, the ids it runs
//! after, and a stage, as an input line does (see [`crate::plan`]); they
//! are checked before anything is sent. A data task may carry a kind of
//! its own ([`Task::kind`], an input line's `"type"`), dealt only to the
//! workers that serve it.

use common::work::Work;

use crate::input::InputError;
use crate::plan::Plan;

/// One task as a [`Source`] gives it: what to do, and its place among the
/// others (all optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// What the worker does.
    pub work: Work,
    /// A name other tasks' [`Task::after`] refer to.
    pub id: Option<String>,
    /// The ids of the tasks that must succeed before this one goes out.
    pub after: Vec<String>,
    /// Its stage: a task of a later stage goes out only once every task of
    /// the earlier stages is done.
    pub stage: u32,
    /// Its cost hint in milliseconds, for `--order cost` (a sleep's own
    /// length when not given).
    pub cost: Option<u64>,
    /// A data task's kind of its own (the input's `"type"`): only a worker
    /// that says it serves that kind is dealt it (see `common::kinds`).
    pub kind: Option<String>,
}

impl Task {
    /// A task that does `work`, with no id, dependency or stage.
    pub fn new(work: Work) -> Task {
        Task {
            work,
            id: None,
            after: Vec::new(),
            stage: 0,
            cost: None,
            kind: None,
        }
    }

    /// Names the task, for other tasks' [`Task::after`].
    pub fn id(mut self, id: impl Into<String>) -> Task {
        self.id = Some(id.into());
        self
    }

    /// Runs it after the task named `id` succeeded.
    pub fn after(mut self, id: impl Into<String>) -> Task {
        self.after.push(id.into());
        self
    }

    /// Puts it in `stage`.
    pub fn stage(mut self, stage: u32) -> Task {
        self.stage = stage;
        self
    }

    /// Gives it a cost hint (ms) for `--order cost`.
    pub fn cost(mut self, ms: u64) -> Task {
        self.cost = Some(ms);
        self
    }

    /// Gives a data task a kind of its own, for the workers that serve it.
    pub fn kind(mut self, kind: impl Into<String>) -> Task {
        self.kind = Some(kind.into());
        self
    }
}

impl From<Work> for Task {
    fn from(work: Work) -> Task {
        Task::new(work)
    }
}

/// Where a batch's tasks come from, in your code: the ventilator's
/// counterpart of the worker's `Handler` (py-zmq-pipeline's
/// `Task.handle`, called until it has nothing more to give).
///
/// Every iterator of [`Work`] or of [`Task`] is a source:
///
/// ```no_run
/// # fn demo(vent: ventilator::Ventilator) -> Result<(), ventilator::Error> {
/// use common::work::Work;
/// let sleeps = (1..=100).map(|ms| Work::Sleep { ms });
/// vent.run_source(sleeps, &common::Shutdown::new())?;
/// # Ok(()) }
/// ```
pub trait Source {
    /// The next task, or `None` when the batch has no more. Called before
    /// the batch is announced, until it returns `None` (see the module's
    /// docs for why).
    fn next_task(&mut self) -> Option<Task>;
}

impl<I, T> Source for I
where
    I: Iterator<Item = T>,
    T: Into<Task>,
{
    fn next_task(&mut self) -> Option<Task> {
        self.next().map(Into::into)
    }
}

/// Takes every task of `source` into a plan, as an input file's would be:
/// ids resolved, each task no larger than `max_bytes` on the wire. A task
/// is named by its number (from 0) in what goes wrong.
pub fn plan(mut source: impl Source, max_bytes: usize) -> Result<Plan, InputError> {
    let mut plan = Plan::default();
    let mut named = std::collections::HashMap::new();
    let mut refs: Vec<Vec<String>> = Vec::new();
    let mut scratch = Vec::new();
    while let Some(task) = source.next_task() {
        let number = plan.works.len() as u64;
        let bad = |reason: String| InputError::Task {
            task: number,
            reason,
        };
        if let Some(id) = &task.id
            && named.insert(id.clone(), number).is_some()
        {
            return Err(bad(format!("the id {id:?} is used twice")));
        }
        if let Work::Primes { from, to } = task.work
            && from > to
        {
            return Err(bad(format!("primes range {from}..{to} is backwards")));
        }
        if let Some(kind) = &task.kind {
            common::kinds::check_type(kind).map_err(bad)?;
            if !matches!(task.work, Work::Data { .. }) {
                return Err(bad(format!(
                    "a kind of its own ({kind:?}) is for a data task, not a {} task",
                    task.work.kind()
                )));
            }
        }
        scratch.clear();
        common::protocol::encode_named_task(&mut scratch, 0, task.kind.as_deref(), &task.work);
        if scratch.len() > max_bytes {
            return Err(bad(format!(
                "the task is {} bytes, more than a message may carry (--max-msg-size)",
                scratch.len()
            )));
        }
        plan.cost.push(task.cost);
        plan.ids.push(task.id);
        plan.stage.push(task.stage);
        plan.kinds.push(task.kind);
        refs.push(task.after);
        plan.works.push(task.work);
    }
    if plan.works.is_empty() {
        return Err(InputError::Empty);
    }
    if refs.iter().any(|a| !a.is_empty()) {
        for (t, after) in refs.into_iter().enumerate() {
            let ids = after
                .into_iter()
                .map(|a| {
                    named.get(&a).copied().ok_or_else(|| InputError::Task {
                        task: t as u64,
                        reason: format!(
                            "it runs after {a:?}, which no task of the source is named"
                        ),
                    })
                })
                .collect::<Result<Vec<u64>, _>>()?;
            plan.after.push(ids);
        }
    }
    plan.shed_unused();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iterator_of_works_is_a_source_and_plans_as_an_input_file_would() {
        let p = plan((1..=3).map(|ms| Work::Sleep { ms }), 1 << 20).unwrap();
        let file = crate::input::parse("1\n2\n3\n".as_bytes(), crate::input::Plain::Sleep, 1 << 20)
            .unwrap();
        assert_eq!(p, file);
        assert_eq!(p.fingerprint(), file.fingerprint(), "the same batch id");
    }

    #[test]
    fn tasks_name_each_other_and_mistakes_name_the_task() {
        let tasks = vec![
            Task::new(Work::Noop).id("a"),
            Task::new(Work::Noop).after("a").stage(1),
        ];
        let p = plan(tasks.into_iter(), 1 << 20).unwrap();
        assert_eq!(p.after, vec![vec![], vec![0]]);
        assert_eq!(p.stage, vec![0, 1]);

        let unknown = vec![Task::new(Work::Noop), Task::new(Work::Noop).after("nope")];
        let e = plan(unknown.into_iter(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("task 1") && e.contains("\"nope\""), "{e}");

        let data = || Work::Data {
            data: serde_json::Value::Null,
        };
        let kinds = vec![Task::new(data()).kind("A"), Task::new(data())];
        let p = plan(kinds.into_iter(), 1 << 20).unwrap();
        assert_eq!(p.kinds, vec![Some("A".to_string()), None]);
        let e = plan(std::iter::once(Task::new(Work::Noop).kind("A")), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("for a data task"), "{e}");
        let e = plan(std::iter::once(Task::new(data()).kind("exec")), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("built-in"), "{e}");

        let twice = vec![Task::new(Work::Noop).id("x"), Task::new(Work::Noop).id("x")];
        let e = plan(twice.into_iter(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("task 1") && e.contains("used twice"), "{e}");

        let big = std::iter::once(Work::Data {
            data: serde_json::Value::String("x".repeat(100)),
        });
        let e = plan(big, 50).unwrap_err().to_string();
        assert!(e.contains("task 0") && e.contains("--max-msg-size"), "{e}");

        assert!(matches!(
            plan(std::iter::empty::<Work>(), 1 << 20),
            Err(InputError::Empty)
        ));
    }

    #[test]
    fn a_source_of_its_own_is_called_until_it_says_no_more() {
        /// py-zmq-pipeline's Task: handle() gives tasks until there are none.
        struct Countdown(u64);
        impl Source for Countdown {
            fn next_task(&mut self) -> Option<Task> {
                self.0 = self.0.checked_sub(1)?;
                Some(Task::new(Work::Sleep { ms: self.0 }))
            }
        }
        let p = plan(Countdown(4), 1 << 20).unwrap();
        assert_eq!(p.works, [3, 2, 1, 0].map(|ms| Work::Sleep { ms }).to_vec());
    }
}
