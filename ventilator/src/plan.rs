//! A batch as the ventilator plans it: the task bodies, and what each task
//! must wait for.
//!
//! A task may name tasks it runs `after` (by their `id`, or by their index in
//! the input, 0-based), and may carry a `stage`: a task of a later stage runs
//! only once every task of the earlier stages is done. A task is held back
//! until everything it waits for has been acknowledged **ok** by the sink; a
//! dependency that failed fails its dependants, with the reason. A cycle, or
//! an `after` that names an unknown task or a task of a later stage, is
//! refused before the batch starts, naming the tasks.
//!
//! Each task has a kind (see [`common::kinds`]): its body's, or the name a
//! data task gives its own (`"type"`), which picks the workers it may go to.

use common::work::Work;

/// The tasks of a batch and their order constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per task, what to do, in input order (a task's index is its id on
    /// the wire).
    pub works: Vec<Work>,
    /// Per task, the indices of the tasks it runs after; empty when no task
    /// has any.
    pub after: Vec<Vec<u64>>,
    /// Per task, its stage; empty when no task has one (then all are 0).
    pub stage: Vec<u32>,
    /// Per task, the cost hint (ms) the input gave for `--order cost`;
    /// empty when no task has one ([`Plan::cost_of`] falls back on a
    /// sleep's own length). Kept apart, and only when given, so that a
    /// batch of millions costs no word per task for it.
    pub cost: Vec<Option<u64>>,
    /// Per task, the input's `id`, to name it in messages; empty when no
    /// task has one.
    pub ids: Vec<Option<String>>,
    /// Per task, the name a data task gives its own kind (the input's
    /// `"type"`; see [`common::kinds`]); empty when no task has one (then
    /// each task's kind is its body's, [`Work::kind`]).
    pub kinds: Vec<Option<String>>,
}

/// Most task kinds in one batch (a worker's kinds are a bit set of them).
pub const MAX_KINDS: usize = 64;

impl From<Vec<Work>> for Plan {
    fn from(works: Vec<Work>) -> Plan {
        Plan {
            works,
            ..Plan::default()
        }
    }
}

/// Why a plan cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A task runs after one that does not exist.
    #[error("task {task} runs after {after:?}, which is not a task of this batch")]
    Unknown {
        /// The task, as named in messages.
        task: String,
        /// What it names.
        after: String,
    },
    /// A task runs after one of a later stage, which waits for it.
    #[error("task {task} (stage {stage}) runs after task {after} of the later stage {later}")]
    LaterStage {
        /// The task.
        task: String,
        /// Its stage.
        stage: u32,
        /// The task it runs after.
        after: String,
        /// That task's stage.
        later: u32,
    },
    /// Tasks wait for each other; the tasks of one cycle are named.
    #[error("the tasks {0} wait for each other (a cycle): none of them could ever start")]
    Cycle(String),
}

impl Plan {
    /// How many tasks.
    pub fn len(&self) -> usize {
        self.works.len()
    }

    /// Whether there is no task.
    pub fn is_empty(&self) -> bool {
        self.works.is_empty()
    }

    /// How the task is named in messages: its id if it has one, else its
    /// index.
    pub fn name(&self, task: u64) -> String {
        match self.ids.get(task as usize).and_then(Option::as_ref) {
            Some(id) => format!("{task} ({id:?})"),
            None => task.to_string(),
        }
    }

    /// The task's cost for `--order cost`: its hint, or a sleep's own
    /// length.
    pub fn cost_of(&self, task: u64) -> Option<u64> {
        self.cost
            .get(task as usize)
            .copied()
            .flatten()
            .or_else(|| self.works.get(task as usize)?.expected_ms())
    }

    /// The task's stage (0 unless it has one).
    pub fn stage_of(&self, task: u64) -> u32 {
        self.stage.get(task as usize).copied().unwrap_or(0)
    }

    /// The tasks it runs after.
    pub fn after_of(&self, task: u64) -> &[u64] {
        self.after.get(task as usize).map_or(&[], Vec::as_slice)
    }

    /// The task's kind: the name a data task gives its own, or its body's.
    pub fn kind_of(&self, task: u64) -> &str {
        match self.kinds.get(task as usize).and_then(Option::as_deref) {
            Some(name) => name,
            None => self.works[task as usize].kind(),
        }
    }

    /// Appends task `task`'s body, as sent (a named data task as such).
    pub fn encode_task(&self, out: &mut Vec<u8>, sent_us: u64, task: u64) {
        let name = self.kinds.get(task as usize).and_then(Option::as_deref);
        common::protocol::encode_named_task(out, sent_us, name, &self.works[task as usize]);
    }

    /// The batch's kinds in order of first appearance, and each task's
    /// index among them; refuses a name that is not a kind name, a name on
    /// a task that is not a data task, and more than [`MAX_KINDS`] kinds.
    pub fn kind_table(&self) -> Result<(Vec<String>, Vec<u8>), String> {
        let mut names: Vec<String> = Vec::new();
        let mut of = Vec::with_capacity(self.len());
        for t in 0..self.len() as u64 {
            if let Some(Some(name)) = self.kinds.get(t as usize) {
                common::kinds::check_type(name)
                    .map_err(|e| format!("task {}: {e}", self.name(t)))?;
                if !matches!(self.works[t as usize], Work::Data { .. }) {
                    return Err(format!(
                        "task {}: only a data task names a kind of its own (\"type\")",
                        self.name(t)
                    ));
                }
            }
            let kind = self.kind_of(t);
            let i = match names.iter().position(|k| k == kind) {
                Some(i) => i,
                None => {
                    if names.len() == MAX_KINDS {
                        return Err(format!("more than {MAX_KINDS} task kinds in one batch"));
                    }
                    names.push(kind.to_string());
                    names.len() - 1
                }
            };
            of.push(i as u8);
        }
        Ok((names, of))
    }

    /// Drops the per-task lists that no task uses (every stage 0, no cost
    /// hint, id or kind of its own): what no task has costs nothing per
    /// task. An input file and a source both end so.
    pub fn shed_unused(&mut self) {
        if self.stage.iter().all(|&s| s == 0) {
            self.stage.clear();
        }
        if self.cost.iter().all(Option::is_none) {
            self.cost.clear();
        }
        if self.ids.iter().all(Option::is_none) {
            self.ids.clear();
        }
        if self.kinds.iter().all(Option::is_none) {
            self.kinds.clear();
        }
    }

    /// Whether any task waits for another (by `after` or by stage).
    pub fn has_constraints(&self) -> bool {
        !self.after.is_empty() || self.stage.iter().any(|&s| s != 0)
    }

    /// Refuses a plan that could never finish: a dependency on a task that
    /// does not exist, or of a later stage, or a cycle. The ledger relies on
    /// it; [`crate::Ventilator::run_plan`] calls it once for every batch.
    pub fn check(&self) -> Result<(), PlanError> {
        let n = self.len() as u64;
        for t in 0..n {
            for &a in self.after_of(t) {
                if a >= n {
                    return Err(PlanError::Unknown {
                        task: self.name(t),
                        after: a.to_string(),
                    });
                }
                if self.stage_of(a) > self.stage_of(t) {
                    return Err(PlanError::LaterStage {
                        task: self.name(t),
                        stage: self.stage_of(t),
                        after: self.name(a),
                        later: self.stage_of(a),
                    });
                }
            }
        }
        if self.after.is_empty() {
            return Ok(());
        }
        // Kahn's algorithm: what is never freed lies on (or behind) a cycle.
        let mut waiting: Vec<usize> = (0..n).map(|t| self.after_of(t).len()).collect();
        let mut dependants: Vec<Vec<u64>> = vec![Vec::new(); n as usize];
        for t in 0..n {
            for &a in self.after_of(t) {
                dependants[a as usize].push(t);
            }
        }
        let mut free: Vec<u64> = (0..n).filter(|&t| waiting[t as usize] == 0).collect();
        let mut freed = 0;
        while let Some(t) = free.pop() {
            freed += 1;
            for &d in &dependants[t as usize] {
                waiting[d as usize] -= 1;
                if waiting[d as usize] == 0 {
                    free.push(d);
                }
            }
        }
        if freed == n as usize {
            return Ok(());
        }
        // Name the tasks of one cycle: walk back from a stuck task until a
        // task repeats.
        let stuck = |t: u64| waiting[t as usize] > 0;
        let mut seen = vec![usize::MAX; n as usize];
        let mut path = Vec::new();
        let mut t = (0..n).find(|&t| stuck(t)).unwrap_or(0);
        while seen[t as usize] == usize::MAX {
            seen[t as usize] = path.len();
            path.push(t);
            t = self
                .after_of(t)
                .iter()
                .copied()
                .find(|&a| stuck(a))
                .unwrap_or(t);
        }
        let cycle: Vec<String> = path[seen[t as usize]..]
            .iter()
            .map(|&t| self.name(t))
            .collect();
        Err(PlanError::Cycle(cycle.join(", ")))
    }

    /// A fingerprint of the batch: the same tasks give the same batch id, so
    /// a restarted ventilator and a sink that resumes its output recognise
    /// the batch they were collecting (FNV-1a over the encoded tasks).
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        let mut buf = Vec::new();
        for (t, w) in self.works.iter().enumerate() {
            buf.clear();
            // A named data task's name is part of what it is.
            let name = self.kinds.get(t).and_then(Option::as_deref);
            common::protocol::encode_named_task(&mut buf, 0, name, w);
            eat(&(buf.len() as u64).to_le_bytes());
            eat(&buf);
            eat(&self.stage_of(t as u64).to_le_bytes());
            for a in self.after_of(t as u64) {
                eat(&a.to_le_bytes());
            }
            eat(b"\n");
        }
        h.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(after: Vec<Vec<u64>>, stage: Vec<u32>) -> Plan {
        let n = after.len().max(stage.len());
        Plan {
            works: vec![Work::Noop; n],
            after,
            stage,
            cost: Vec::new(),
            ids: Vec::new(),
            kinds: Vec::new(),
        }
    }

    #[test]
    fn cycles_and_unknown_tasks_are_named() {
        assert!(
            plan(vec![vec![], vec![0], vec![0, 1]], vec![])
                .check()
                .is_ok()
        );
        match plan(vec![vec![], vec![2], vec![3], vec![1]], vec![]).check() {
            Err(PlanError::Cycle(c)) => {
                for t in ["1", "2", "3"] {
                    assert!(c.contains(t), "{c}");
                }
                assert!(!c.contains('0'), "{c}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan(vec![vec![0]], vec![]).check(),
            Err(PlanError::Cycle(_))
        ));
        assert!(matches!(
            plan(vec![vec![], vec![7]], vec![]).check(),
            Err(PlanError::Unknown { .. })
        ));
        assert!(matches!(
            plan(vec![vec![1], vec![]], vec![0, 1]).check(),
            Err(PlanError::LaterStage { .. })
        ));
    }

    #[test]
    fn the_fingerprint_follows_the_tasks() {
        let a = Plan::from(vec![Work::Sleep { ms: 1 }, Work::Noop]);
        let b = Plan::from(vec![Work::Sleep { ms: 2 }, Work::Noop]);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        c.after = vec![vec![], vec![0]];
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
