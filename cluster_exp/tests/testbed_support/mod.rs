//! Helpers the testbed tests share: child processes that die with the test, the processes
//! a run left behind, and small hand-written traces.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the test lets go of it, passing or failing.
pub struct Proc(pub Child);

impl Proc {
    /// Waits up to `limit` for the process to exit on its own; fails the test with `what`
    /// (what the test waited for) when it does not.
    #[allow(dead_code)] // not every test binary waits for an exit
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

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

/// Writes `dir/trace.csv`: the reference trace header, then one line per row (`job_id,num_gpu,
/// submit_time,iterations,model_name,batch_size,duration,interval,iteration_time,
/// resource_time_0,resource_time_1,resource_time_2,priority`, times in milliseconds).
#[allow(dead_code)] // not every test binary writes its own trace
pub fn write_trace(dir: &Path, rows: &[&str]) -> PathBuf {
    let mut text = String::from(
        "job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,interval,\
         iteration_time,resource_time_0,resource_time_1,resource_time_2,priority\n",
    );
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    let path = dir.join("trace.csv");
    std::fs::write(&path, text).unwrap();
    path
}
