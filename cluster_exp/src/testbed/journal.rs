//! Durable scheduler state for `muri scheduler --state_dir DIR`.
//!
//! The directory holds three files:
//! - `header.json`: what the run is (trace digest, cluster spec, policy and its options,
//!   executor). A scheduler restarted on the directory with other inputs is refused, so a
//!   resumed run never mixes two experiments.
//! - `journal.log`: an append-only log, one record per state change — a launch sent to the
//!   workers, a launch's outcome (its `launches.csv` row), and the state a round leaves
//!   (virtual clock, arrivals and submissions, per-job progress, completions, failures,
//!   cancels, running groups and their measured speeds). Each record is framed as
//!   `length (u32 LE) | CRC-32 of the payload (u32 LE) | payload (JSON)` and the file is
//!   fsync'd after each append, so a record either is whole and checksummed or is the torn
//!   tail of a crash: reading stops at the first record whose frame or checksum is wrong,
//!   drops it (with a warning) and truncates the file there.
//! - `snapshot.bin`: the whole state every [`SNAPSHOT_EVERY`] rounds, framed the same way,
//!   written to a temporary file, fsync'd and renamed over the old one; the journal is then
//!   emptied. Restart reads the snapshot and replays the records after it, so its cost is
//!   bounded by the snapshot size plus [`SNAPSHOT_EVERY`] rounds of records. Records carry
//!   a sequence number; those the snapshot already holds (a crash between the rename and
//!   the truncation) are skipped.
//!
//! Floats are stored by their bits ([`Bits`]): exact, and NaN or ±inf survive.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobIdx, Status};

const HEADER_FILE: &str = "header.json";
const JOURNAL_FILE: &str = "journal.log";
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Rounds between snapshots: restart replays at most this many rounds of records.
pub const SNAPSHOT_EVERY: usize = 200;
const FORMAT_VERSION: u32 = 1;
/// Largest record read back: a corrupt length field must not allocate gigabytes.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// What a run is; a state directory resumes only the run it was made by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// SHA-256 of the trace's jobs (empty trace: online submissions only).
    pub trace_sha256: String,
    pub cluster: String,
    pub policy: String,
    pub policy_options: String,
    pub executor: String,
}

impl Header {
    pub fn new(
        trace_sha256: String,
        cluster: String,
        policy: String,
        policy_options: String,
        executor: String,
    ) -> Header {
        Header {
            version: FORMAT_VERSION,
            trace_sha256,
            cluster,
            policy,
            policy_options,
            executor,
        }
    }

    /// The first field in which `self` (this run) differs from `stored`.
    fn difference(&self, stored: &Header) -> Option<(&'static str, String, String)> {
        let fields = [
            (
                "format version",
                self.version.to_string(),
                stored.version.to_string(),
            ),
            (
                "trace",
                self.trace_sha256.clone(),
                stored.trace_sha256.clone(),
            ),
            ("cluster spec", self.cluster.clone(), stored.cluster.clone()),
            ("policy", self.policy.clone(), stored.policy.clone()),
            (
                "policy options",
                self.policy_options.clone(),
                stored.policy_options.clone(),
            ),
            ("executor", self.executor.clone(), stored.executor.clone()),
        ];
        fields.into_iter().find(|(_, now, then)| now != then)
    }
}

/// An `f64` stored by its bits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bits(u64);

impl From<f64> for Bits {
    fn from(v: f64) -> Bits {
        Bits(v.to_bits())
    }
}

impl From<Bits> for f64 {
    fn from(b: Bits) -> f64 {
        f64::from_bits(b.0)
    }
}

fn bits_opt(v: Option<f64>) -> Option<Bits> {
    v.map(Bits::from)
}

fn f64_opt(v: Option<Bits>) -> Option<f64> {
    v.map(f64::from)
}

/// A job's progress as the testbed tracks it. The policy's own bookkeeping (attained
/// service, queues, sort keys) is not kept: after a restart the policy sees the unfinished
/// jobs arrive again with their progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// 0 pending, 1 running, 2 done (completed, failed or cancelled).
    pub status: u8,
    pub remaining_iteration: Bits,
    pub start_time: Option<Bits>,
    pub last_check_time: Bits,
    pub total_executed_time: Bits,
    pub pending_time: Bits,
    pub preempt: u32,
    pub resume: u32,
    pub iteration_time_cur: Bits,
    pub overhead: Bits,
    /// (node, GPUs) per share of the placement.
    pub placement: Option<Vec<(u32, u32)>>,
    pub group: Vec<JobIdx>,
    pub end_time: Option<Bits>,
    /// Consecutive trainer failures.
    pub attempts: u32,
    pub failed: bool,
    pub cancelled: bool,
    pub error: String,
    /// Real-time mode: iterations the job's trainers ran (launches that ended, plus the
    /// last poll of a running one), which a resumed run's launches go on from.
    #[serde(default)]
    pub iterations_done: u64,
}

impl JobState {
    /// `job`'s state plus the testbed's per-job retry bookkeeping.
    pub fn of(job: &Job, attempts: u32, failed: bool, cancelled: bool, error: &str) -> JobState {
        JobState {
            status: match job.status {
                Status::Pending => 0,
                Status::Running => 1,
                Status::Done => 2,
            },
            remaining_iteration: job.remaining_iteration.into(),
            start_time: bits_opt(job.start_time),
            last_check_time: job.last_check_time.into(),
            total_executed_time: job.total_executed_time.into(),
            pending_time: job.pending_time.into(),
            preempt: job.preempt,
            resume: job.resume,
            iteration_time_cur: job.iteration_time_cur.into(),
            overhead: job.overhead.into(),
            placement: job
                .placement
                .as_ref()
                .map(|p| p.shares.iter().map(|s| (s.node, s.gpus)).collect()),
            group: job.group.clone(),
            end_time: bits_opt(job.end_time),
            attempts,
            failed,
            cancelled,
            error: error.to_string(),
            iterations_done: 0,
        }
    }

    /// Writes the stored progress into `job` (built afresh from its spec).
    pub fn restore(&self, job: &mut Job) {
        job.status = match self.status {
            0 => Status::Pending,
            1 => Status::Running,
            _ => Status::Done,
        };
        job.remaining_iteration = self.remaining_iteration.into();
        job.start_time = f64_opt(self.start_time);
        job.last_check_time = self.last_check_time.into();
        job.total_executed_time = self.total_executed_time.into();
        job.pending_time = self.pending_time.into();
        job.preempt = self.preempt;
        job.resume = self.resume;
        job.iteration_time_cur = self.iteration_time_cur.into();
        job.overhead = self.overhead.into();
        job.placement = self
            .placement
            .as_ref()
            .map(|shares| crate::cluster::Placement {
                shares: shares
                    .iter()
                    .map(|&(node, gpus)| crate::cluster::NodeShare { node, gpus })
                    .collect(),
            });
        job.group = self.group.clone();
        job.end_time = f64_opt(self.end_time);
    }
}

/// A job submitted online (`muri submit`): enough to build it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineJob {
    pub job_id: u64,
    pub model: String,
    pub num_gpu: u32,
    pub iterations: u64,
    pub submit_time: Bits,
}

/// A running group: members and (node, GPU ids) per node, the head first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub members: Vec<JobIdx>,
    pub gpus: Vec<(u32, Vec<u32>)>,
}

/// A launch sent to the workers whose outcome is not journaled yet: after a restart its
/// processes may still run, so it is killed on its nodes and recorded as lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLaunch {
    pub nodes: Vec<u32>,
    /// Its `launches.csv` row, should the scheduler die before the outcome is known.
    pub lost_row: String,
}

/// What a round leaves behind, as the scheduler hands it to [`Journal::round`].
#[derive(Debug, Clone, Default)]
pub struct RoundView {
    pub now: f64,
    pub rounds: usize,
    pub launches: usize,
    pub next_launch_id: u64,
    /// Every online submission so far, in arrival order.
    pub online: Vec<OnlineJob>,
    /// Every job, by index.
    pub jobs: Vec<JobState>,
    pub runnable: Vec<JobIdx>,
    pub held: Vec<(JobIdx, f64)>,
    pub running: Vec<GroupState>,
    pub measured: Vec<(Vec<JobIdx>, f64)>,
    pub startup_seen: Vec<(String, f64)>,
    /// Ids of the completed jobs, in completion order (the `job.csv` rows).
    pub completed: Vec<u64>,
}

/// The scheduler's whole durable state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Sequence number of the last record applied.
    pub seq: u64,
    pub now: Option<Bits>,
    pub rounds: usize,
    pub launches: usize,
    pub next_launch_id: u64,
    pub online: Vec<OnlineJob>,
    pub jobs: Vec<JobState>,
    pub runnable: Vec<JobIdx>,
    pub held: Vec<(JobIdx, Bits)>,
    pub running: Vec<GroupState>,
    pub measured: Vec<(Vec<JobIdx>, Bits)>,
    pub startup_seen: Vec<(String, Bits)>,
    pub completed: Vec<u64>,
    /// `cluster.csv` lines (newline included), measurement columns and all.
    pub cluster_rows: Vec<String>,
    /// `launches.csv` rows of the launches whose outcome is known, by launch id.
    pub launch_rows: BTreeMap<u64, String>,
    pub open_launches: BTreeMap<u64, OpenLaunch>,
}

/// The change one round made: scalars and small lists whole, jobs and rows as deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RoundDelta {
    now: Bits,
    rounds: usize,
    launches: usize,
    next_launch_id: u64,
    new_online: Vec<OnlineJob>,
    changed_jobs: Vec<(JobIdx, JobState)>,
    runnable: Vec<JobIdx>,
    held: Vec<(JobIdx, Bits)>,
    running: Vec<GroupState>,
    measured: Vec<(Vec<JobIdx>, Bits)>,
    startup_seen: Vec<(String, Bits)>,
    new_completed: Vec<u64>,
    new_cluster_rows: Vec<String>,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry {
    Launch { id: u64, launch: OpenLaunch },
    LaunchEnded { id: u64, row: String },
    Round(Box<RoundDelta>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    seq: u64,
    entry: Entry,
}

impl State {
    fn apply(&mut self, seq: u64, entry: Entry) {
        self.seq = seq;
        match entry {
            Entry::Launch { id, launch } => {
                self.open_launches.insert(id, launch);
                self.next_launch_id = self.next_launch_id.max(id + 1);
            }
            Entry::LaunchEnded { id, row } => {
                self.open_launches.remove(&id);
                self.launch_rows.insert(id, row);
                self.next_launch_id = self.next_launch_id.max(id + 1);
            }
            Entry::Round(d) => {
                self.now = Some(d.now);
                self.rounds = d.rounds;
                self.launches = d.launches;
                self.next_launch_id = self.next_launch_id.max(d.next_launch_id);
                self.online.extend(d.new_online);
                for (idx, job) in d.changed_jobs {
                    if idx >= self.jobs.len() {
                        self.jobs.resize(idx + 1, job.clone());
                    }
                    self.jobs[idx] = job;
                }
                self.runnable = d.runnable;
                self.held = d.held;
                self.running = d.running;
                self.measured = d.measured;
                self.startup_seen = d.startup_seen;
                self.completed.extend(d.new_completed);
                self.cluster_rows.extend(d.new_cluster_rows);
            }
        }
    }

    /// The virtual clock of the last journaled round.
    pub fn now(&self) -> Option<f64> {
        self.now.map(f64::from)
    }

    /// The `cluster.csv` rows journaled so far.
    pub fn cluster_lines(&self) -> Vec<String> {
        self.cluster_rows.clone()
    }

    /// The round's change against this state.
    fn delta(&self, view: &RoundView, cluster: &[String]) -> RoundDelta {
        let changed_jobs = view
            .jobs
            .iter()
            .enumerate()
            .filter(|(i, j)| self.jobs.get(*i) != Some(j))
            .map(|(i, j)| (i, j.clone()))
            .collect();
        RoundDelta {
            now: view.now.into(),
            rounds: view.rounds,
            launches: view.launches,
            next_launch_id: view.next_launch_id,
            new_online: view
                .online
                .get(self.online.len()..)
                .unwrap_or_default()
                .to_vec(),
            changed_jobs,
            runnable: view.runnable.clone(),
            held: view.held.iter().map(|&(j, t)| (j, t.into())).collect(),
            running: view.running.clone(),
            measured: view
                .measured
                .iter()
                .map(|(m, t)| (m.clone(), (*t).into()))
                .collect(),
            startup_seen: view
                .startup_seen
                .iter()
                .map(|(m, t)| (m.clone(), (*t).into()))
                .collect(),
            new_completed: view
                .completed
                .get(self.completed.len()..)
                .unwrap_or_default()
                .to_vec(),
            new_cluster_rows: cluster
                .get(self.cluster_rows.len()..)
                .unwrap_or_default()
                .to_vec(),
        }
    }
}

/// The open state directory: appends records, takes snapshots.
pub struct Journal {
    dir: PathBuf,
    log: File,
    state: State,
    rounds_since_snapshot: usize,
}

/// What reading a state directory found.
pub struct Opened {
    pub journal: Journal,
    /// The state to resume from; `None` for a new directory.
    pub resumed: Option<State>,
    /// Records read from the journal (after the snapshot) and its size in bytes.
    pub replayed: (usize, u64),
}

impl Journal {
    /// Opens (or creates) `dir` for a run described by `header`. A directory made by a run
    /// of other inputs is refused; a torn or corrupt journal tail is dropped.
    pub fn open(dir: &Path, header: &Header) -> anyhow::Result<Opened> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        check_header(dir, header)?;
        let mut state = read_snapshot(&dir.join(SNAPSHOT_FILE))?.unwrap_or_default();
        let from_snapshot = state.seq > 0;
        let log_path = dir.join(JOURNAL_FILE);
        let (records, bytes) = read_journal(&log_path)?;
        let replayed = records.len();
        for r in records {
            if r.seq > state.seq {
                state.apply(r.seq, r.entry);
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let resumed = (from_snapshot || replayed > 0).then(|| state.clone());
        Ok(Opened {
            journal: Journal {
                dir: dir.to_path_buf(),
                log,
                state,
                rounds_since_snapshot: 0,
            },
            resumed,
            replayed: (replayed, bytes),
        })
    }

    /// The state as journaled so far.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Journals a launch before its Execute is sent.
    pub fn launch(&mut self, id: u64, launch: OpenLaunch) -> anyhow::Result<()> {
        self.append(Entry::Launch { id, launch })
    }

    /// Journals a launch's outcome (its `launches.csv` row) before the row is written.
    pub fn launch_ended(&mut self, id: u64, row: String) -> anyhow::Result<()> {
        self.append(Entry::LaunchEnded { id, row })
    }

    /// Journals the state a round left (before its log rows are written); every
    /// [`SNAPSHOT_EVERY`] rounds the whole state goes to a snapshot instead.
    pub fn round(&mut self, view: &RoundView, cluster: &[String]) -> anyhow::Result<()> {
        let delta = self.state.delta(view, cluster);
        self.append(Entry::Round(Box::new(delta)))?;
        self.rounds_since_snapshot += 1;
        if self.rounds_since_snapshot >= SNAPSHOT_EVERY {
            self.snapshot()?;
        }
        Ok(())
    }

    fn append(&mut self, entry: Entry) -> anyhow::Result<()> {
        let seq = self.state.seq + 1;
        let record = Record { seq, entry };
        let frame = frame(&serde_json::to_vec(&record)?);
        let path = self.dir.join(JOURNAL_FILE);
        self.log
            .write_all(&frame)
            .and_then(|()| self.log.sync_data())
            .with_context(|| format!("appending to {}", path.display()))?;
        self.state.apply(seq, record.entry);
        Ok(())
    }

    /// Writes the whole state to the snapshot (atomically) and empties the journal.
    pub fn snapshot(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let frame = frame(&serde_json::to_vec(&self.state)?);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&frame)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing the snapshot {}", path.display()))?;
        self.log
            .set_len(0)
            .and_then(|()| self.log.sync_all())
            .with_context(|| format!("emptying {}", self.dir.join(JOURNAL_FILE).display()))?;
        self.rounds_since_snapshot = 0;
        tracing::debug!(
            seq = self.state.seq,
            bytes = frame.len(),
            "state snapshot written"
        );
        Ok(())
    }
}

/// `length | CRC-32 | payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the frame at the start of `bytes` and the frame's length, or why it is
/// not a whole, intact frame.
fn unframe(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes, shorter than a frame header",
            bytes.len()
        ));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_RECORD_BYTES || bytes.len() - 8 < len {
        return Err(format!(
            "record of {len} bytes, {} left in the file",
            bytes.len() - 8
        ));
    }
    let payload = &bytes[8..8 + len];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok((payload, 8 + len))
}

fn check_header(dir: &Path, header: &Header) -> anyhow::Result<()> {
    let path = dir.join(HEADER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Header = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a state header", path.display()))?;
            if let Some((field, now, then)) = header.difference(&stored) {
                bail!(
                    "--state_dir {} holds a run with another {field} ({then}; this run: {now}): \
                     resume it with the same inputs, or give another --state_dir",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{HEADER_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(&serde_json::to_vec_pretty(header)?)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                File::open(dir)?.sync_all()
            };
            write().with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_snapshot(path: &Path) -> anyhow::Result<Option<State>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (payload, _) = unframe(&bytes)
        .map_err(|why| anyhow::anyhow!("{}: corrupt snapshot: {why}", path.display()))?;
    let state = serde_json::from_slice(payload)
        .with_context(|| format!("{}: corrupt snapshot", path.display()))?;
    Ok(Some(state))
}

/// The journal's intact records, in order, and the file's size. The first torn or corrupt
/// record ends the journal: it and anything after it are dropped (with a warning) and the
/// file is truncated to the intact prefix, so the next append follows a whole record.
fn read_journal(path: &Path) -> anyhow::Result<(Vec<Record>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut records = Vec::new();
    let mut at = 0;
    let mut last_seq = 0;
    while at < bytes.len() {
        let parsed = unframe(&bytes[at..]).and_then(|(payload, len)| {
            let r: Record = serde_json::from_slice(payload).map_err(|e| format!("{e}"))?;
            if r.seq <= last_seq {
                return Err(format!("sequence {} after {last_seq}", r.seq));
            }
            Ok((r, len))
        });
        match parsed {
            Ok((r, len)) => {
                last_seq = r.seq;
                records.push(r);
                at += len;
            }
            Err(why) => {
                tracing::warn!(
                    journal = %path.display(),
                    offset = at,
                    dropped_bytes = bytes.len() - at,
                    "dropping a torn or corrupt journal tail: {why}"
                );
                eprintln!(
                    "warning: {}: dropped a torn or corrupt record at byte {at} ({} bytes): {why}",
                    path.display(),
                    bytes.len() - at
                );
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(at as u64).and_then(|()| f.sync_all()))
                    .with_context(|| format!("truncating {}", path.display()))?;
                break;
            }
        }
    }
    Ok((records, bytes.len() as u64))
}

/// A CSV log that is only ever appended to: a resumed run adds its rows after the first
/// run's instead of rewriting the file.
pub struct AppendCsv {
    path: PathBuf,
    file: File,
    rows: usize,
}

impl AppendCsv {
    /// Creates (or truncates) `path` with `header`.
    pub fn create(path: &Path, header: &str) -> anyhow::Result<AppendCsv> {
        let mut file =
            File::create(path).with_context(|| format!("creating {}", path.display()))?;
        writeln!(file, "{header}").with_context(|| format!("writing {}", path.display()))?;
        Ok(AppendCsv {
            path: path.to_path_buf(),
            file,
            rows: 0,
        })
    }

    /// Opens `path` to append to it and returns its data rows; a partial last line (a
    /// write cut by the crash) is cut off, and so are the rows after the first `max_rows`
    /// (rows of a round whose journal record was lost: the round runs again). A missing or
    /// empty file is created.
    pub fn resume(
        path: &Path,
        header: &str,
        max_rows: usize,
    ) -> anyhow::Result<(AppendCsv, Vec<String>)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut whole = text.rfind('\n').map_or(0, |i| i + 1);
        let beyond = text[..whole]
            .match_indices('\n')
            .nth(max_rows)
            .map(|(i, _)| i + 1);
        if let Some(end) = beyond.filter(|&end| end < whole) {
            tracing::warn!(
                file = %path.display(),
                rows = max_rows,
                "rows beyond the journal dropped (their round runs again)"
            );
            whole = end;
        }
        if whole == 0 {
            return Ok((AppendCsv::create(path, header)?, Vec::new()));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(whole as u64)
            .with_context(|| format!("truncating {}", path.display()))?;
        let rows: Vec<String> = text[..whole].lines().skip(1).map(str::to_string).collect();
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let csv = AppendCsv {
            path: path.to_path_buf(),
            file,
            rows: rows.len(),
        };
        Ok((csv, rows))
    }

    /// Data rows in the file.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends whole lines (each ending in a newline).
    pub fn append(&mut self, lines: &[String]) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(lines.concat().as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.rows += lines.len();
        Ok(())
    }

    /// Flushes to disk.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(policy: &str) -> Header {
        Header::new(
            "abc".into(),
            "n2g4".into(),
            policy.into(),
            "{}".into(),
            "Trainers".into(),
        )
    }

    fn view(now: f64, jobs: usize, completed: &[u64]) -> RoundView {
        RoundView {
            now,
            rounds: now as usize,
            jobs: (0..jobs)
                .map(|i| JobState {
                    status: 0,
                    remaining_iteration: (100.0 - now - i as f64).into(),
                    start_time: None,
                    last_check_time: now.into(),
                    total_executed_time: 0.0.into(),
                    pending_time: f64::INFINITY.into(),
                    preempt: 0,
                    resume: 0,
                    iteration_time_cur: 0.1.into(),
                    overhead: 0.0.into(),
                    placement: Some(vec![(0, 2)]),
                    group: vec![],
                    end_time: None,
                    attempts: 0,
                    failed: false,
                    cancelled: false,
                    error: String::new(),
                    iterations_done: i as u64,
                })
                .collect(),
            runnable: (0..jobs).collect(),
            completed: completed.to_vec(),
            ..RoundView::default()
        }
    }

    fn cluster_row(t: f64) -> String {
        format!("{t},0,0,0,1,3,0,2,0,0,0.000000,,,,,,,,\n")
    }

    #[test]
    fn a_reopened_directory_replays_rounds_and_launches() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &header("srtf")).unwrap().journal;
        let rows: Vec<String> = (0..3).map(|t| cluster_row(t as f64)).collect();
        j.round(&view(1.0, 3, &[]), &rows[..1]).unwrap();
        j.launch(
            7,
            OpenLaunch {
                nodes: vec![0, 1],
                lost_row: "7,lost\n".into(),
            },
        )
        .unwrap();
        j.launch_ended(6, "6,ok\n".into()).unwrap();
        j.round(&view(2.5, 4, &[9]), &rows).unwrap();
        let want = j.state().clone();
        drop(j);
        let opened = Journal::open(dir.path(), &header("srtf")).unwrap();
        let got = opened.resumed.unwrap();
        assert_eq!(got, want);
        assert_eq!(got.now(), Some(2.5));
        assert_eq!(got.jobs.len(), 4);
        assert_eq!(got.completed, vec![9]);
        assert_eq!(got.cluster_lines(), rows);
        assert_eq!(got.next_launch_id, 8);
        assert_eq!(got.open_launches[&7].nodes, vec![0, 1]);
        assert_eq!(got.launch_rows[&6], "6,ok\n");
        assert!(f64::from(got.jobs[0].pending_time).is_infinite());
    }

    #[test]
    fn a_snapshot_replaces_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &header("srtf")).unwrap().journal;
        for r in 0..SNAPSHOT_EVERY + 3 {
            j.round(&view(r as f64, 2, &[]), &[]).unwrap();
        }
        let want = j.state().clone();
        drop(j);
        let opened = Journal::open(dir.path(), &header("srtf")).unwrap();
        assert_eq!(opened.replayed.0, 3, "only the rounds after the snapshot");
        assert_eq!(opened.resumed.unwrap(), want);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_journal_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &header("srtf")).unwrap().journal;
        j.round(&view(1.0, 2, &[]), &[]).unwrap();
        let kept = j.state().clone();
        j.round(&view(2.0, 2, &[]), &[]).unwrap();
        drop(j);
        let log = dir.path().join(JOURNAL_FILE);
        let len = std::fs::metadata(&log).unwrap().len();
        let f = OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(len - 5).unwrap();
        let opened = Journal::open(dir.path(), &header("srtf")).unwrap();
        assert_eq!(opened.resumed.as_ref(), Some(&kept));
        let mut j = opened.journal;
        j.round(&view(3.0, 2, &[]), &[]).unwrap();
        drop(j);
        let again = Journal::open(dir.path(), &header("srtf")).unwrap();
        assert_eq!(again.resumed.unwrap().now(), Some(3.0));
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &header("srtf")).unwrap().journal;
        j.round(&view(1.0, 2, &[]), &[]).unwrap();
        j.round(&view(2.0, 2, &[]), &[]).unwrap();
        drop(j);
        let log = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(&log, bytes).unwrap();
        let opened = Journal::open(dir.path(), &header("srtf")).unwrap();
        assert_eq!(opened.resumed.unwrap().now(), Some(1.0));
    }

    #[test]
    fn another_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _ = Journal::open(dir.path(), &header("srtf")).unwrap();
        let err = Journal::open(dir.path(), &header("tiresias"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("another policy (srtf; this run: tiresias)"),
            "{err}"
        );
    }

    #[test]
    fn a_resumed_csv_loses_only_its_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.csv");
        std::fs::write(&path, "a,b\n1,2\n3,").unwrap();
        let (mut csv, rows) = AppendCsv::resume(&path, "a,b", 10).unwrap();
        assert_eq!(rows, vec!["1,2".to_string()]);
        csv.append(&["5,6\n".to_string()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n5,6\n");
        assert_eq!(csv.rows(), 2);
    }

    #[test]
    fn rows_beyond_the_journal_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.csv");
        std::fs::write(&path, "a,b\n1,2\n3,4\n5,6\n").unwrap();
        let (_, rows) = AppendCsv::resume(&path, "a,b", 1).unwrap();
        assert_eq!(rows, vec!["1,2".to_string()]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n");
    }
}
