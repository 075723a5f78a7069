//! Workers as Slurm pilots, through a real single-node Slurm cluster
//! (`scripts/slurm-lab.sh`: munged, slurmctld and slurmd in a temp dir, on
//! free ports). A standing sink; `scripts/slurm-workers.sh` submits two
//! pilots as one job; two batches go through them with no new `sbatch`,
//! every task running inside the job (it prints `$SLURM_JOB_ID`); `scancel`
//! ends the pilots. A second test SIGKILLs one pilot mid-batch: nothing is
//! lost. Where the cluster cannot run (not root, Slurm or munge not
//! installed) each test says why and passes without running.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::testing::{stop_within, time_bomb};
use nix::sys::signal::Signal;
use support::{
    ServeSink, bin, free_endpoint, results_of, serve_sink, submit_in_background, wait_for_results,
    write_input,
};

/// One cluster at a time: both tests use the machine's one node name.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running test cluster; stopped (every daemon, by pid) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts one, or says why it cannot here (`None`).
    fn up() -> Option<Cluster> {
        // A short path: the munge socket's path has a length limit.
        let tmp = tempfile::Builder::new()
            .prefix("zs")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().join("lab");
        let up = || {
            Command::new("bash")
                .arg(root().join("scripts/slurm-lab.sh"))
                .arg("up")
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let mut out = up();
        if out.status.code() == Some(1) {
            // Once more, after a pause: the last test's cluster may still
            // be letting go of something (its daemons take seconds to end).
            eprintln!(
                "slurm-lab.sh up failed once, trying again:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = Command::new("bash")
                .arg(root().join("scripts/slurm-lab.sh"))
                .arg("down")
                .arg(&dir)
                .output();
            std::thread::sleep(Duration::from_secs(3));
            out = up();
        }
        match out.status.code() {
            Some(0) => Some(Cluster {
                conf: dir.join("slurm.conf"),
                dir,
                _tmp: tmp,
            }),
            Some(77) => {
                eprintln!(
                    "skipped: no Slurm test cluster here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            _ => panic!(
                "slurm-lab.sh up failed: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// A Slurm client command against this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The job ids in the queue.
    fn queue(&self) -> Vec<String> {
        let out = self.run("squeue", &["-h", "-o", "%i"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/slurm-lab.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A standing sink on free ports, and a free port for the ventilators.
struct Hub {
    sink: ServeSink,
    tasks: String,
    out: PathBuf,
}

impl Hub {
    fn start(dir: &Path) -> Hub {
        let out = dir.join("out");
        Hub {
            sink: serve_sink(&out, None),
            tasks: free_endpoint(),
            out,
        }
    }

    /// `slurm-workers.sh`: `n` pilots as one job; its id.
    fn pilots(&self, cluster: &Cluster, n: usize, log: &Path) -> String {
        let out = cluster
            .command("bash")
            .arg(root().join("scripts/slurm-workers.sh"))
            .args(["--workers", &n.to_string(), "--cpus-per-task", "1"])
            .args(["--idle-exit", "5m", "--task-endpoint", &self.tasks])
            .args(["--result-endpoint", &self.sink.results])
            .args(["--control-endpoint", &self.sink.control, "--worker-bin"])
            .arg(bin("worker"))
            .arg("--output")
            .arg(log)
            .args(["--", "--", "--heartbeat", "200ms"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slurm-workers.sh: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(job.parse::<u64>().is_ok(), "not a job id: {job:?}");
        job
    }

    /// The pids of the workers the sink has heard join (names are
    /// `host:pid`), waiting until there are `n`.
    fn worker_pids(&mut self, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.sink.lines.all(Duration::from_millis(100));
            let mut pids: Vec<i32> = log
                .lines()
                .filter(|l| l.contains("joined"))
                .filter_map(|l| {
                    let name = l.split("worker ").nth(1)?.split_whitespace().next()?;
                    name.rsplit_once(':')?.1.parse().ok()
                })
                .collect();
            pids.sort_unstable();
            pids.dedup();
            if pids.len() >= n {
                return pids;
            }
            assert!(Instant::now() < deadline, "{n} pilots never joined:\n{log}");
        }
    }

    /// Submits `tasks` (shell commands) and waits: exit code and the
    /// ventilator's line.
    fn submit(&self, name: &str, tasks: &[String], workers: usize) -> (Option<i32>, String) {
        let input = write_input(&self.out.with_file_name(name), tasks);
        support::submit(&self.tasks, &self.sink.feedback, &input, workers)
    }
}

/// task → output, from the results file the ventilator's line names; each
/// task at most once, every one ok.
fn outputs(line: &str) -> HashMap<u64, String> {
    results_of(line)
        .into_iter()
        .map(|(task, (status, output))| {
            assert_eq!(status, "ok", "task {task}: {output}");
            (task, output)
        })
        .collect()
}

fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// What each test starts with: a cluster of its own (one at a time), a
/// standing sink, and two pilots submitted as one job; `body` is given
/// them, the job id and a temp dir, under a time bomb.
fn with_two_pilots(body: impl FnOnce(&Cluster, &mut Hub, String, &Path) + Send + 'static) {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cluster) = Cluster::up() else { return };
    time_bomb(120, move || {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = Hub::start(dir.path());
        let job = hub.pilots(&cluster, 2, &dir.path().join("pilots.log"));
        body(&cluster, &mut hub, job, dir.path());
        stop_within(&mut hub.sink.child, Signal::SIGTERM, Duration::from_secs(3));
    });
}

#[test]
fn pilots_serve_two_batches_with_one_sbatch_and_scancel_ends_them() {
    with_two_pilots(|cluster, hub, job, _dir| {
        // Batch A: each task runs inside the job, and says so. (A pilot
        // says HELLO once a ventilator is there to take tasks from.)
        let a: Vec<String> = (0..12).map(|_| "echo $SLURM_JOB_ID".to_string()).collect();
        let (code, line) = hub.submit("a", &a, 2);
        assert_eq!(code, Some(0), "{line}");
        let pids = hub.worker_pids(2);
        let got = outputs(&line);
        assert_eq!(got.len(), 12, "{line}");
        assert!(got.values().all(|o| *o == job), "{got:?} (job {job})");

        // Batch B to the same pilots: no new job.
        let b: Vec<String> = (0..12).map(|i| format!("echo {i}-$SLURM_JOB_ID")).collect();
        let (code, line) = hub.submit("b", &b, 2);
        assert_eq!(code, Some(0), "{line}");
        let got = outputs(&line);
        assert_eq!(got.len(), 12);
        for (task, output) in &got {
            assert_eq!(*output, format!("{task}-{job}"));
        }
        assert_eq!(cluster.queue(), vec![job.clone()], "one job, the same");
        assert_eq!(hub.worker_pids(2), pids, "the same pilots");

        // scancel: the pilots go (SIGTERM), and the queue empties.
        cluster.run("scancel", &[&job]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(pids.iter().all(|&p| gone(p)) && cluster.queue().is_empty()) {
            assert!(
                Instant::now() < deadline,
                "after scancel: pilots {pids:?}, queue {:?}",
                cluster.queue()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

#[test]
fn a_pilot_killed_mid_batch_loses_nothing() {
    with_two_pilots(|cluster, hub, job, dir| {
        let tasks: Vec<String> = (0..30)
            .map(|i| format!("sleep 0.1; echo {i}-$SLURM_JOB_ID"))
            .collect();
        let input = write_input(&dir.join("c"), &tasks);
        let submitted = submit_in_background(&hub.tasks, &hub.sink.feedback, &input, 2);
        let pids = hub.worker_pids(2);
        // A few results in, one pilot dies without a word.
        wait_for_results(&hub.out, 4);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();

        let (code, line) = submitted.join().unwrap();
        assert_eq!(code, Some(0), "{line}");
        let got = outputs(&line);
        assert_eq!(got.len(), 30, "every task once: {line}");
        for (task, output) in &got {
            assert_eq!(*output, format!("{task}-{job}"));
        }
        cluster.run("scancel", &[&job]);
    });
}
