//! The multi-subnet lab: network namespaces as hosts (scripts/netns-lab.sh),
//! each with its own sshd; scripts/deploy.sh starts a sink and a ventilator
//! in subnet A, a task streamer, a result streamer and a control forwarder on
//! the host between the subnets, and two workers in subnet B, all over ssh.
//! Every result must arrive, also after one worker's link is cut mid-batch.
//!
//! It needs root, network namespaces and sshd; where any is missing it says
//! so and passes without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        return Some("not root".into());
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return Some("no /usr/sbin/sshd (.ci/run installs openssh-server)".into());
    }
    for tool in ["ip", "ssh", "scp", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("no {tool} (.ci/run installs iproute2 and openssh)"));
        }
    }
    let probe = "zp-probe";
    let made = Command::new("ip")
        .args(["netns", "add", probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !made {
        return Some("cannot create network namespaces here".into());
    }
    let _ = Command::new("ip").args(["netns", "del", probe]).status();
    None
}

/// Tears the lab down however the test ends.
struct Lab {
    env: Vec<(String, String)>,
    inventory: PathBuf,
}

impl Lab {
    fn script(&self, name: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts").join(name));
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Runs deploy.sh inside the device host's namespace, which reaches
    /// both subnets.
    fn deploy(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", "zp-dev", "bash"])
            .arg(repo().join("scripts/deploy.sh"))
            .args(args)
            .arg(&self.inventory)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.output().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.deploy(&["stop"]);
        let _ = self.script("netns-lab.sh").arg("down").output();
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_batch_crosses_two_subnets_through_devices_and_survives_a_cut_link() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: the network-namespace lab cannot run: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let results = dir.path().join("results.jsonl");
    let report = dir.path().join("report.json");
    let bin = Path::new(env!("CARGO_BIN_EXE_devices"))
        .parent()
        .unwrap()
        .to_path_buf();
    for b in ["sink", "ventilator", "worker"] {
        if !bin.join(b).exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-q", "-p", b, "--bin", b])
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot build {b}");
        }
    }
    let tasks = 1200;
    let worker = "--dispatch push --threads 2 --heartbeat 500ms --task-endpoint tcp://198.51.100.1:5563 --result-endpoint tcp://198.51.100.1:5566 --control-endpoint tcp://198.51.100.1:5565";
    let inventory = dir.path().join("hosts");
    std::fs::write(
        &inventory,
        format!(
            "# the lab: subnet A 192.0.2.0/24, subnet B 198.51.100.0/24, the device host between
sink        root@192.0.2.10     --output {results} --report {report} --worker-timeout 2s
streamer    root@192.0.2.1      --frontend @tcp://192.0.2.1:5562 --backend @tcp://198.51.100.1:5563
streamer    root@192.0.2.1      --frontend @tcp://198.51.100.1:5566 --backend >tcp://192.0.2.10:5558
forwarder   root@192.0.2.1      --frontend >tcp://192.0.2.10:5559 --backend @tcp://198.51.100.1:5565
ventilator  root@192.0.2.10     --dispatch push --task-endpoint >tcp://192.0.2.1:5562 --feedback-endpoint tcp://localhost:5561 --workers 2 --tasks {tasks} --kind sleep --workload 10 --seed 7 --task-timeout 8s --retries 10
worker      root@198.51.100.11  {worker}
worker      root@198.51.100.12  {worker}
",
            results = results.display(),
            report = report.display(),
        ),
    )
    .unwrap();
    let mut lab = Lab {
        env: vec![
            ("ZPIPE_LAB".into(), lab_dir.display().to_string()),
            (
                "ZPIPE_REMOTE_DIR".into(),
                dir.path().join("remote").display().to_string(),
            ),
            ("ZPIPE_BIN".into(), bin.display().to_string()),
        ],
        inventory,
    };
    let up = lab.script("netns-lab.sh").arg("up").output().unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let env = lab.script("netns-lab.sh").arg("env").output().unwrap();
    for line in String::from_utf8_lossy(&env.stdout).lines() {
        let (k, v) = line.trim_start_matches("export ").split_once('=').unwrap();
        lab.env.push((k.into(), v.trim_matches('\'').into()));
    }

    let out = lab.deploy(&["up", "--copy"]);
    assert!(
        out.status.success(),
        "deploy failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = lab.deploy(&["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("running"), "{said}");

    // A quarter in, one worker's host loses its link.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&results).len() < tasks / 4 {
        assert!(
            Instant::now() < deadline,
            "no progress: {}",
            String::from_utf8_lossy(&lab.deploy(&["logs"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cut = lab
        .script("netns-lab.sh")
        .args(["cut", "zp-b2"])
        .output()
        .unwrap();
    assert!(cut.status.success());

    let deadline = Instant::now() + Duration::from_secs(90);
    while !report.exists() {
        assert!(
            Instant::now() < deadline,
            "the batch did not complete: {} results\n{}",
            lines(&results).len(),
            String::from_utf8_lossy(&lab.deploy(&["logs"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["complete"], true, "{r}");
    let mut seen = vec![0u32; tasks];
    for l in lines(&results) {
        seen[l["task"].as_u64().unwrap() as usize] += 1;
        assert_eq!(l["status"], "ok", "{l}");
    }
    assert!(seen.iter().all(|&n| n == 1), "not every task exactly once");
}
