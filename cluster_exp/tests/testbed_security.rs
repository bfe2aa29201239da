//! Transport security of the testbed with real processes on loopback: TLS handshakes
//! (certificates from `muri tls gen`), https:// against plaintext and back, mutual TLS
//! through workers and trainers, missing and wrong tokens, and private log files.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MURI: &str = env!("CARGO_BIN_EXE_muri");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const TOKEN: &str = "security-test-token";

/// A child process killed (SIGKILL) when the test ends, so nothing outlives a failed test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ca.pem`, `node.pem`, `node.key` made by `muri tls gen` in `dir`.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_gen(dir: &Path) -> Certs {
    let out = Command::new(MURI)
        .args(["tls", "gen", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = dir.join("node.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key,
    }
}

/// `--tls_cert … --tls_key … --tls_ca …` of a daemon.
fn daemon_tls(c: &Certs) -> Vec<String> {
    [
        ("--tls_cert", &c.cert),
        ("--tls_key", &c.key),
        ("--tls_ca", &c.ca),
    ]
    .iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

struct Scheduler {
    proc: Proc,
    port: u16,
    log: PathBuf,
    stderr: Option<JoinHandle<String>>,
}

/// Starts `muri scheduler` on port 0 and reads the bound port from its stderr.
fn start_scheduler(dir: &Path, trace: Option<&Path>, extra: &[String]) -> Scheduler {
    let log = dir.join("out");
    let mut cmd = Command::new(MURI);
    cmd.args(["scheduler", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .args(["--schedule", "shortest", "--log_path"])
        .arg(&log)
        .args(["--listen", "127.0.0.1:0", "--schedule_interval", "3600"])
        .args(["--heartbeat_ms", "100", "--heartbeat_timeout_ms", "800"])
        .args(["--time_scale", "0.01", "--fast_forwarding", "10"])
        .args(extra)
        .env("MURI_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match trace {
        Some(t) => cmd.arg("--trace_file").arg(t),
        None => cmd.args(["--workers", "0"]),
    };
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("scheduler listening on ") {
                let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let proc = Proc(child);
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(port)) => Scheduler {
            proc,
            port,
            log,
            stderr: Some(reader),
        },
        _ => {
            drop(proc);
            panic!("no port reported:\n{}", reader.join().unwrap());
        }
    }
}

/// `muri status` with these flags (the token from MURI_TOKEN unless `token` says otherwise).
fn status(addr: &str, flags: &[String]) -> Output {
    Command::new(MURI)
        .args(["status", "--scheduler", addr])
        .args(flags)
        .env("MURI_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `muri status` until it succeeds (the server may need a moment after printing its port).
fn status_ok(addr: &str, flags: &[String]) -> String {
    let started = Instant::now();
    loop {
        let out = status(addr, flags);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "status never succeeded: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ca_flag(c: &Certs) -> Vec<String> {
    vec!["--tls_ca".into(), c.ca.display().to_string()]
}

#[test]
fn status_over_tls_works_and_every_mismatch_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_gen(&dir.path().join("tls"));
    let sched = start_scheduler(dir.path(), None, &daemon_tls(&certs));
    let https = format!("https://127.0.0.1:{}", sched.port);
    let listed = status_ok(&https, &ca_flag(&certs));
    assert!(listed.contains("0 workers"), "{listed}");
    // A bare host:port with a CA dials TLS too.
    status_ok(&format!("127.0.0.1:{}", sched.port), &ca_flag(&certs));

    // Plaintext against the TLS scheduler: refused, and the error says what to do.
    let plain = status(&format!("127.0.0.1:{}", sched.port), &[]);
    assert!(!plain.status.success());
    assert!(stderr(&plain).contains("in plaintext"), "{plain:?}");
    // https:// without a CA never falls back to plaintext.
    let no_ca = status(&https, &[]);
    assert!(!no_ca.status.success());
    assert!(stderr(&no_ca).contains("--tls_ca"), "{no_ca:?}");
    // A CA that did not sign the scheduler's certificate: the handshake fails.
    let other = tls_gen(&dir.path().join("other"));
    let wrong_ca = status(&https, &ca_flag(&other));
    assert!(!wrong_ca.status.success());
    assert!(stderr(&wrong_ca).contains("over TLS"), "{wrong_ca:?}");
    // http:// with a CA is a contradiction, refused before connecting.
    let http = status(
        &format!("http://127.0.0.1:{}", sched.port),
        &ca_flag(&certs),
    );
    assert!(!http.status.success());
    assert!(stderr(&http).contains("asks for plaintext"), "{http:?}");
    drop(sched);
}

#[test]
fn https_to_a_plaintext_scheduler_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_gen(&dir.path().join("tls"));
    let sched = start_scheduler(dir.path(), None, &[]);
    let plain = format!("127.0.0.1:{}", sched.port);
    status_ok(&plain, &[]);
    let out = status(&format!("https://{plain}"), &ca_flag(&certs));
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("over TLS"), "{err}");
    assert!(out.stdout.is_empty(), "nothing was answered in plaintext");
    drop(sched);
}

/// A whole run over mutual TLS: workers register and are dialed over TLS, trainers report
/// over TLS with the worker's certificate, and a client without a certificate is refused.
#[test]
fn a_trace_runs_over_mutual_tls_and_the_logs_are_private() {
    let trainer = Path::new(MURI).with_file_name("muri-trainer");
    assert!(trainer.exists(), "{} is missing", trainer.display());
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_gen(&dir.path().join("tls"));
    let trace = dir.path().join("trace.csv");
    let gen = Command::new(MURI)
        .args(["trace", "gen", "--jobs", "6", "--interarrival", "300"])
        .args([
            "--median-hours",
            "1",
            "--gpu-mix",
            "1:0.5,2:0.5",
            "--seed",
            "3",
        ])
        .arg("-o")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{gen:?}");
    let mut flags = daemon_tls(&certs);
    flags.push("--tls_client_auth".into());
    let mut sched = start_scheduler(dir.path(), Some(&trace), &flags);
    let https = format!("https://127.0.0.1:{}", sched.port);

    let no_client_cert = status(&https, &ca_flag(&certs));
    assert!(!no_client_cert.status.success(), "{no_client_cert:?}");
    let mut with_cert = ca_flag(&certs);
    with_cert.extend([
        "--tls_client_cert".into(),
        certs.cert.display().to_string(),
        "--tls_client_key".into(),
        certs.key.display().to_string(),
    ]);
    status_ok(&https, &with_cert);

    let _workers: Vec<Proc> = (0..2)
        .map(|node| {
            Proc(
                Command::new(MURI)
                    .args(["worker", "--scheduler", &https, "--node-id"])
                    .arg(node.to_string())
                    .args(["--gpus", "4", "--kill_grace", "0.5"])
                    .args(&flags)
                    .env("MURI_TOKEN", TOKEN)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let started = Instant::now();
    let code = loop {
        if let Some(code) = sched.proc.0.try_wait().unwrap() {
            break code;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "run too slow");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = sched.stderr.take().unwrap().join().unwrap();
    assert!(code.success(), "{err}");
    assert!(err.contains("6 jobs completed, 0 failed"), "{err}");
    for file in ["job.csv", "cluster.csv", "failed.csv"] {
        let mode = std::fs::metadata(sched.log.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
}

#[test]
fn daemons_without_a_token_refuse_to_start_unless_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Path::new(ROOT).join("cluster_spec/n2g4.csv");
    let scheduler = Command::new(MURI)
        .args(["scheduler", "--workers", "0", "--listen", "127.0.0.1:0"])
        .arg("--cluster_spec")
        .arg(&spec)
        .arg("--log_path")
        .arg(dir.path())
        .env_remove("MURI_TOKEN")
        .output()
        .unwrap();
    assert_eq!(scheduler.status.code(), Some(1), "{scheduler:?}");
    assert!(
        stderr(&scheduler).contains("no token") && stderr(&scheduler).contains("--no_auth"),
        "{scheduler:?}"
    );
    let worker = Command::new(MURI)
        .args(["worker", "--node-id", "0", "--scheduler", "127.0.0.1:9"])
        .env_remove("MURI_TOKEN")
        .output()
        .unwrap();
    assert_eq!(worker.status.code(), Some(1), "{worker:?}");
    assert!(stderr(&worker).contains("no token"), "{worker:?}");

    // --no_auth starts, with a warning, and accepts a client without a token.
    let mut child = Command::new(MURI)
        .args([
            "scheduler",
            "--workers",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--no_auth",
        ])
        .arg("--cluster_spec")
        .arg(&spec)
        .arg("--log_path")
        .arg(dir.path())
        .env_remove("MURI_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let port = loop {
        let line = lines.next().expect("scheduler exited").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(addr) = line.strip_prefix("scheduler listening on ") {
            break addr.rsplit(':').next().unwrap().to_string();
        }
    };
    let _sched = Proc(child);
    assert!(seen.contains("authentication is off"), "{seen}");
    let out = Command::new(MURI)
        .args(["status", "--scheduler", &format!("127.0.0.1:{port}")])
        .env_remove("MURI_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn plaintext_beyond_loopback_needs_insecure() {
    let out = Command::new(MURI)
        .args(["scheduler", "--listen", "0.0.0.0:0", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .env("MURI_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("--insecure"), "{out:?}");
}

#[test]
fn a_worker_with_a_wrong_token_backs_off_and_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(dir.path(), None, &[]);
    let started = Instant::now();
    let mut worker = Command::new(MURI)
        .args(["worker", "--node-id", "0", "--gpus", "4"])
        .args(["--register_timeout", "3", "--scheduler"])
        .arg(format!("127.0.0.1:{}", sched.port))
        .env("MURI_TOKEN", "wrong")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    worker
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = worker.wait().unwrap();
    let took = started.elapsed();
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("giving up"), "{err}");
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "gave up after {took:?}"
    );
    // Exponential back-off (0.25 s doubling): a handful of attempts in 3 s, where a fixed
    // 300 ms retry would make ten or more.
    let refusals = err.matches("registration refused").count();
    assert!((2..=6).contains(&refusals), "{refusals} refusals:\n{err}");
    drop(sched);
}
