//! The trainer binary with real tch models (feature `torch`; the MPI test also needs `mpi`
//! and Open MPI's `mpirun`). Run by scripts/test.sh with those features.
#![cfg(feature = "torch")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn trainer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muri-trainer"));
    cmd.env_remove("OMPI_COMM_WORLD_SIZE");
    cmd
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "trainer failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `job <id>: iterations <n>, loss <x>, params <hash>` lines as (id, n, hash).
fn job_lines(text: &str) -> Vec<(u64, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("job ")?;
            let (id, rest) = rest.split_once(": iterations ")?;
            let (n, rest) = rest.split_once(", loss ")?;
            let hash = rest.split_once(", params ")?.1;
            Some((id.parse().ok()?, n.parse().ok()?, hash.to_string()))
        })
        .collect()
}

/// Two ranks under mpirun, one job of each family in one group: after every all-reduce and
/// step both ranks hold identical parameters (`--check-sync` all-reduces the parameters and
/// fails the run on any difference).
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_stay_identical_after_every_allreduce() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new("mpirun")
        .args(muri_workloads::launch::mpirun_local_args(2))
        .arg(env!("CARGO_BIN_EXE_muri-trainer"))
        .args(["--group-id", "1", "--workload", "real", "--check-sync"])
        .args(["--collective", "mpi", "--data-dir"])
        .arg(data.path())
        .args(["--job", "0:1:resnet18:4:0:0:0:0:8"])
        .args(["--job", "1:2:gpt2:4:0:0:0:0:4"])
        .args(["--job", "3:3:dqn:4:0:0:0:0:16"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (Open MPI) must be installed for the mpi feature tests");
    let text = stdout(&out);
    assert!(
        text.contains("check-sync: 12 parameter checks passed"),
        "{text}"
    );
    let jobs = job_lines(&text);
    assert_eq!(jobs.len(), 3, "{text}");
    assert!(jobs.iter().all(|(_, n, _)| *n == 4), "{text}");
}

/// The same across two hosts, as `muri worker` launches a group placed on two nodes: one
/// app context per host (127.0.0.2 and 127.0.0.3, each with its own GPU list), the "remote"
/// daemons started through the loopback launch agent, the all-reduce crossing the hosts.
#[cfg(feature = "mpi")]
#[test]
fn ranks_on_two_loopback_hosts_stay_identical_after_every_allreduce() {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    let data = tempfile::tempdir().unwrap();
    let agent = data.path().join("agent.sh");
    std::fs::write(&agent, muri_workloads::launch::LOOPBACK_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hosts = [
        muri_workloads::launch::HostRanks {
            addr: "127.0.0.2",
            gpu_ids: &[0],
        },
        muri_workloads::launch::HostRanks {
            addr: "127.0.0.3",
            gpu_ids: &[1],
        },
    ];
    let args: Vec<String> = [
        "--group-id",
        "1",
        "--workload",
        "real",
        "--check-sync",
        "--collective",
        "mpi",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--job",
        "0:1:resnet18:4:0:0:0:0:8",
        "--job",
        "1:2:gpt2:4:0:0:0:0:4",
    ]
    .map(String::from)
    .to_vec();
    let out = Command::new("mpirun")
        .args(muri_workloads::launch::mpirun_multi_host_args(
            &hosts,
            &agent,
            Path::new(env!("CARGO_BIN_EXE_muri-trainer")),
            &args,
            &[],
        ))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // The agent's per-daemon session directories go under TMPDIR: here, the test's own.
        .env("TMPDIR", data.path())
        .output()
        .expect("mpirun (Open MPI) must be installed for the mpi feature tests");
    let text = stdout(&out);
    assert!(
        text.contains("check-sync: 8 parameter checks passed"),
        "{text}"
    );
    assert_eq!(job_lines(&text).len(), 2, "{text}");
}

/// SIGTERM mid-run (what the worker sends on preemption): the trainer drains, checkpoints
/// every job and exits 0; a relaunch resumes at the saved iteration with bit-identical
/// parameters, and training then continues from there.
#[test]
fn sigterm_checkpoints_and_relaunch_resumes() {
    let data = tempfile::tempdir().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let launch = |iterations: u64| {
        let mut cmd = trainer();
        cmd.args(["--group-id", "7", "--workload", "real", "--data-dir"])
            .arg(data.path())
            .arg("--checkpoint-dir")
            .arg(ckpt.path())
            .args(["--job", &format!("0:11:resnet18:{iterations}:0:0:0:0:8")])
            .args(["--job", &format!("2:12:bert:{iterations}:0:0:0:0:4")]);
        cmd
    };
    // Three iterations first, so every job has a checkpoint to resume from.
    let first = job_lines(&stdout(&launch(3).output().unwrap()));
    assert!(first.iter().all(|(_, n, _)| *n == 3), "{first:?}");
    let mut child = launch(100_000)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch stderr for "training started", then let a couple of seconds of training pass.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (started_tx, started_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("training started") {
                let _ = started_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    started_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the trainer never started training");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let killed_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "drain took too long"
    );
    let text = stdout(&out);
    let stderr = reader.join().unwrap();
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    let before = job_lines(&text);
    assert_eq!(before.len(), 2, "{text}");
    assert!(
        before.iter().all(|(_, n, _)| *n > 3 && *n < 100_000),
        "{text}"
    );
    for id in [11, 12] {
        assert!(ckpt.path().join(format!("job-{id}.ckpt")).exists());
    }

    // Relaunch with 0 new iterations: the restored state is exactly what was saved.
    let resumed = job_lines(&stdout(&launch(0).output().unwrap()));
    assert_eq!(resumed, before);

    // And 3 more iterations continue from the saved count.
    let after = job_lines(&stdout(&launch(3).output().unwrap()));
    for ((id, n, hash), (id2, n2, hash2)) in before.iter().zip(&after) {
        assert_eq!(id, id2);
        assert_eq!(*n2, n + 3);
        assert_ne!(hash, hash2, "training changed the weights");
    }
}

/// `--device cuda` where libtorch sees no GPU (`CUDA_VISIBLE_DEVICES` empty hides any GPU
/// the machine has): exit status 1 and a message that says why, never a panic.
#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let out = trainer()
        .args(["--group-id", "1", "--workload", "real", "--device", "cuda"])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--job", "0:1:dqn:2:0:0:0:0:16"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--device cuda: libtorch sees no CUDA device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--model-scale paper` builds the paper's models (the RL learner: no data set to
/// generate), a bad scale is an error naming the value, and `--device cpu` keeps a
/// job on the CPU whatever the machine has.
#[test]
fn paper_scale_trains_and_a_bad_scale_is_an_error() {
    let data = tempfile::tempdir().unwrap();
    let run = |scale: &str| {
        trainer()
            .args(["--group-id", "1", "--workload", "real", "--device", "cpu"])
            .args(["--model-scale", scale, "--data-dir"])
            .arg(data.path())
            .args(["--job", "0:1:dqn:2:0:0:0:0:32"])
            .output()
            .unwrap()
    };
    let lines = job_lines(&stdout(&run("paper")));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1, 2);
    let bad = run("enormous");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`enormous`") && stderr.contains("paper"),
        "{stderr}"
    );
}
