//! The trainer binary on its own (no scheduler): runs a packed group and prints its numbers.
//! Having an integration test also makes `cargo test` build the `muri-trainer` executable
//! that the testbed tests in `cluster_exp` launch.

use std::process::Command;

#[test]
fn standalone_group_runs_and_bad_job_is_rejected() {
    let exe = env!("CARGO_BIN_EXE_muri-trainer");
    let ok = Command::new(exe)
        .args(["--group-id", "1", "--time-scale", "0.01"])
        .args([
            "--job",
            "0:1:resnet18:5:700:60:0:0",
            "--job",
            "1:2:gpt2:5:0.5:410:0:0",
        ])
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.starts_with("measurement phase_iter_s="), "{out}");
    assert!(out.contains(" iterations=5,5"), "{out}");

    let bad = Command::new(exe)
        .args(["--group-id", "1", "--job", "7:1:x:5:1:1:1:0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("slot must be 0..3"));
}
