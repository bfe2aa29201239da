//! `run.json`: what made a run (build, trace, cluster, policy, flags, time), written next to
//! its job.csv so runs of different inputs are never compared by mistake.
//!
//! `muri calc --compare`, `muri plot` and `muri sweep` read it back and refuse to put runs of
//! different traces or clusters side by side unless told `--allow-mixed`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file name inside a run directory.
pub const RUN_FILE: &str = "run.json";

/// The git commit the binary was built from (`unknown` without git at build time).
pub const GIT_COMMIT: &str = env!("MURI_GIT_COMMIT");

/// The project's default cluster (8 nodes × 8 GPUs), compiled in.
pub const DEFAULT_CLUSTER_CSV: &str = include_str!("../../cluster_spec/n8g8.csv");

/// The default cluster as run.json names it; the same bytes as `cluster_spec/n8g8.csv`, so
/// runs on the default and on that file compare as one cluster.
pub fn default_cluster_file() -> InputFile {
    InputFile::of_bytes("cluster_spec/n8g8.csv", DEFAULT_CLUSTER_CSV.as_bytes())
}

/// One input file of a run, identified by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// As given on the command line (or the built-in default's project path).
    pub path: String,
    /// SHA-256 of the bytes read, lower-case hex.
    pub sha256: String,
}

impl InputFile {
    /// Identifies `bytes` read from `path`.
    pub fn of_bytes(path: &str, bytes: &[u8]) -> InputFile {
        InputFile {
            path: path.to_string(),
            sha256: sha256_hex(bytes),
        }
    }

    /// Reads and identifies the file at `path`.
    pub fn of_path(path: &Path) -> anyhow::Result<InputFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(InputFile::of_bytes(&path.display().to_string(), &bytes))
    }
}

/// Everything `run.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub muri_version: String,
    pub git_commit: String,
    pub trace: InputFile,
    /// Jobs in the trace.
    pub jobs: usize,
    pub cluster: InputFile,
    /// The policy's reference name.
    pub policy: String,
    /// Every option the run used, by flag name, after defaults were applied.
    pub options: BTreeMap<String, String>,
    /// The command line as typed.
    pub command_line: Vec<String>,
    /// When the run started, RFC 3339 (UTC).
    pub started_at: String,
    /// Seconds the simulation took.
    pub wall_seconds: f64,
}

impl RunInfo {
    /// A record for a run starting now, by this binary, with this process's command line.
    pub fn new(
        trace: InputFile,
        jobs: usize,
        cluster: InputFile,
        policy: &str,
        options: BTreeMap<String, String>,
    ) -> RunInfo {
        RunInfo {
            muri_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: GIT_COMMIT.to_string(),
            trace,
            jobs,
            cluster,
            policy: policy.to_string(),
            options,
            command_line: std::env::args().collect(),
            started_at: rfc3339(SystemTime::now()),
            wall_seconds: 0.0,
        }
    }

    /// Writes `dir/run.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(RUN_FILE);
        let text = serde_json::to_string_pretty(self).context("encoding run.json")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `dir/run.json`; `Ok(None)` when the directory has none (runs of older builds, or
    /// the reference's logs).
    pub fn read(dir: &Path) -> anyhow::Result<Option<RunInfo>> {
        let path = dir.join(RUN_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let info = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run.json written by muri", path.display()))?;
        Ok(Some(info))
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `2026-12-05T14:26:04Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at).replace_nanosecond(0);
    at.ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `dir` already holds a run (a job.csv or a run.json).
pub fn holds_run(dir: &Path) -> bool {
    dir.join("job.csv").exists() || dir.join(RUN_FILE).exists()
}

/// Fails unless `force` when any of `dirs` already holds a run.
pub fn refuse_overwrite(dirs: &[PathBuf], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let taken: Vec<String> = dirs
        .iter()
        .filter(|d| holds_run(d))
        .map(|d| d.display().to_string())
        .collect();
    if !taken.is_empty() {
        bail!(
            "{} already hold{} a run; pass --force to overwrite",
            taken.join(", "),
            if taken.len() == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

/// One run directory as the mixing check sees it.
#[derive(Debug, Clone)]
pub struct RunOrigin {
    /// How the run is named to the user (its directory).
    pub label: String,
    /// Its run.json, when it has one.
    pub info: Option<RunInfo>,
    /// Rows of its job.csv (compared when a run has no run.json).
    pub job_rows: usize,
}

/// Checks that `runs` share one trace and one cluster. With `allow_mixed` a mismatch only
/// comes back as a warning (the caller prints it); without, it is an error naming both runs'
/// inputs. Runs without run.json are compared by their number of jobs.
pub fn check_same_inputs(runs: &[RunOrigin], allow_mixed: bool) -> anyhow::Result<Vec<String>> {
    check_origins(runs, true, allow_mixed)
}

/// As [`check_same_inputs`], but clusters may differ (a sweep's runs of one trace on several
/// clusters, told apart by their flags).
pub fn check_same_trace(runs: &[RunOrigin], allow_mixed: bool) -> anyhow::Result<Vec<String>> {
    check_origins(runs, false, allow_mixed)
}

fn check_origins(
    runs: &[RunOrigin],
    clusters: bool,
    allow_mixed: bool,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    if let Some(first) = runs.first() {
        for other in &runs[1..] {
            if let Some(p) = mismatch(first, other, clusters) {
                problems.push(p);
            }
        }
    }
    if problems.is_empty() {
        return Ok(Vec::new());
    }
    if !allow_mixed {
        bail!(
            "{}\nthese runs are not comparable; pass --allow-mixed to compare them anyway",
            problems.join("\n")
        );
    }
    Ok(problems
        .into_iter()
        .map(|p| format!("{p} (compared anyway: --allow-mixed)"))
        .collect())
}

fn mismatch(a: &RunOrigin, b: &RunOrigin, clusters: bool) -> Option<String> {
    match (&a.info, &b.info) {
        (Some(x), Some(y)) => {
            if x.trace.sha256 != y.trace.sha256 {
                return Some(format!(
                    "different traces: {} ran {} ({} jobs, sha256 {}), {} ran {} ({} jobs, sha256 {})",
                    a.label,
                    x.trace.path,
                    x.jobs,
                    short(&x.trace.sha256),
                    b.label,
                    y.trace.path,
                    y.jobs,
                    short(&y.trace.sha256)
                ));
            }
            if clusters && x.cluster.sha256 != y.cluster.sha256 {
                return Some(format!(
                    "different clusters: {} ran on {} (sha256 {}), {} on {} (sha256 {})",
                    a.label,
                    x.cluster.path,
                    short(&x.cluster.sha256),
                    b.label,
                    y.cluster.path,
                    short(&y.cluster.sha256)
                ));
            }
            None
        }
        _ if a.job_rows != b.job_rows => Some(format!(
            "different job counts: {} has {} jobs, {} has {} (no run.json to tell the traces apart)",
            a.label, a.job_rows, b.label, b.job_rows
        )),
        _ => None,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(label: &str, trace: &str, cluster: &str, jobs: usize) -> RunOrigin {
        let info = RunInfo::new(
            InputFile::of_bytes(trace, trace.as_bytes()),
            jobs,
            InputFile::of_bytes(cluster, cluster.as_bytes()),
            "shortest",
            BTreeMap::new(),
        );
        RunOrigin {
            label: label.into(),
            info: Some(info),
            job_rows: jobs,
        }
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn runs_of_different_traces_are_refused_naming_both() {
        let runs = [
            origin("a/shortest", "trace3.csv", "n8g8.csv", 992),
            origin("b/shortest", "default.csv", "n8g8.csv", 800),
        ];
        let err = check_same_inputs(&runs, false).unwrap_err().to_string();
        assert!(
            err.contains("trace3.csv") && err.contains("default.csv"),
            "{err}"
        );
        assert!(err.contains("--allow-mixed"), "{err}");
        let warnings = check_same_inputs(&runs, true).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("compared anyway"), "{}", warnings[0]);
    }

    #[test]
    fn runs_of_different_clusters_are_refused() {
        let runs = [
            origin("a", "t.csv", "n8g8.csv", 10),
            origin("b", "t.csv", "n4g8.csv", 10),
        ];
        let err = check_same_inputs(&runs, false).unwrap_err().to_string();
        assert!(
            err.contains("n8g8.csv") && err.contains("n4g8.csv"),
            "{err}"
        );
    }

    #[test]
    fn runs_without_run_json_fall_back_to_job_counts() {
        let bare = |label: &str, rows| RunOrigin {
            label: label.into(),
            info: None,
            job_rows: rows,
        };
        assert!(check_same_inputs(&[bare("a", 5), bare("b", 5)], false)
            .unwrap()
            .is_empty());
        assert!(check_same_inputs(&[bare("a", 5), bare("b", 6)], false).is_err());
    }

    #[test]
    fn run_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RunInfo::read(dir.path()).unwrap(), None);
        let info = origin("a", "t.csv", "c.csv", 3).info.unwrap();
        info.write(dir.path()).unwrap();
        assert_eq!(RunInfo::read(dir.path()).unwrap(), Some(info));
        assert!(holds_run(dir.path()));
        let err = refuse_overwrite(&[dir.path().to_path_buf()], false).unwrap_err();
        assert!(err.to_string().contains("--force"));
        refuse_overwrite(&[dir.path().to_path_buf()], true).unwrap();
    }

    #[test]
    fn start_time_is_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 365 + 61);
        assert_eq!(rfc3339(t), "1971-01-01T00:01:01Z");
    }
}
