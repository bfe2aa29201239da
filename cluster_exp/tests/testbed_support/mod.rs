//! Helpers the testbed tests share: child processes that die with the test, and the
//! processes a run left behind.

use std::process::Child;

/// A child process killed (and reaped) when the test lets go of it, passing or failing.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes (pid, command line) whose environment holds `MURI_TOKEN=token`: everything the
/// run started (scheduler, workers, mpirun, trainers).
#[allow(dead_code)] // each test binary compiles this module; not every one checks for leftovers
pub fn processes_with_token(token: &str) -> Vec<(u32, String)> {
    let needle = format!("MURI_TOKEN={token}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    out
}
