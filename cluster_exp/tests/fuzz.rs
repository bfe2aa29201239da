//! Structured mutation fuzzing of every input parser (trace, cluster spec, `job.csv`,
//! `cluster.csv`) and of `simulate` on the small traces that parse: no input may panic, abort
//! or hang, and every refusal must name the file.
//!
//! Each case starts from a valid file and applies a few seeded mutations (a field replaced by
//! an edge value, a number scaled, fields or lines dropped, duplicated or swapped, other line
//! endings, stray bytes, truncation). Cases are deterministic: `MURI_FUZZ_SEED` (default 19)
//! picks the sequence, `MURI_FUZZ_CASES` the number of cases per parser (default 3,000, so
//! 12,000 in all). A case that fails is saved under the test's temporary directory and printed;
//! keep it under `tests/data/regressions/` (see `tests/bad_input.rs`). A case that runs over
//! [`CASE_LIMIT`] aborts the run with the input on stderr.
//!
//! Longer run: `MURI_FUZZ_CASES=200000 MURI_FUZZ_SEED=$RANDOM cargo test --release -p muri --test fuzz`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use muri::cluster::ClusterSpec;
use muri::metrics::Summary;
use muri::output;
use muri::policy::{PolicyKind, PolicyOptions};
use muri::simulate::simulate;
use muri::trace::Trace;

/// Longest a single case may run (parsing plus simulating a trace of a dozen jobs).
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// Traces with more jobs than this are parsed but not simulated (keeps the run inside a minute).
const SIMULATE_MAX_JOBS: usize = 12;

const TRACE: &str = "\
job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,interval,iteration_time,resource_time_0,resource_time_1,resource_time_2,priority
0,2,0,9981,gpt2,4,4631184,0,464,0.7,416,40,0
1,4,455209,3681,gpt2,4,1593873,455209,433,0.6,413,20,1
2,1,756260,1067,dqn,128,522830.00000000006,301051,490,446,8,0,0
3,1,1624537,1288,dqn,128,631120,868277,490,446,8,0,1
4,2,1882941,25525,bert,4,4977375,258404,195,0.5,163,18,0
5,8,3159381,1050,resnet18,128,967050,1276440,921,723,113,73,1
6,16,3415928,97,vgg16,16,8838837,256547,107,117,68,0,0
";

/// The same jobs with the optional columns left out and the others reordered.
const TRACE_MINIMAL: &str = "\
model_name,job_id,submit_time,num_gpu,iterations,duration,iteration_time,resource_time_0,resource_time_1,resource_time_2
gpt2,0,0,2,9981,4631184,464,0.7,416,40
dqn,2,756260,1,1067,522830,490,446,8,0
bert,4,1882941,2,25525,4977375,195,0.5,163,18
";

const SPECS: [&str; 2] = [
    "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,2,8,92,520\n",
    "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n2,2,4,92,520\n",
];

/// Values that broke, or could break, a parser: limits of every integer width, non-finite
/// and extreme floats, signs, fractions, quoting, separators, control characters.
const EDGE_VALUES: &[&str] = &[
    "",
    " ",
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "0.5",
    "1.0",
    "+1",
    "1e3",
    "0x10",
    "1_000",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e12",
    "1e13",
    "1e308",
    "1e309",
    "-1e308",
    "5e-324",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "infinity",
    "\"\"",
    "\"1,2\"",
    "\"",
    "a\0b",
    "\0",
    "x\ry",
    "x\ny",
    "é",
    "\u{feff}1",
    "vgg16",
    "no-such-model",
];

/// One seeded mutation of `text`, structured by lines and comma-separated fields.
fn mutate(text: &str, rng: &mut StdRng) -> String {
    let mut lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let mut eol = "\n";
    let mut damage_bytes = false;
    // Mostly one or two mutations, so that many traces still parse and reach the simulator.
    let mutations = [1, 1, 1, 2, 2, 3, 4][rng.random_range(0..7)];
    for _ in 0..mutations {
        if lines.is_empty() {
            lines.push(vec![String::new()]);
        }
        let l = rng.random_range(0..lines.len());
        // Data rows are mutated far more often than the header.
        let l = if l == 0 && lines.len() > 1 && rng.random_bool(0.8) {
            rng.random_range(1..lines.len())
        } else {
            l
        };
        let f = rng.random_range(0..lines[l].len().max(1));
        match rng.random_range(0..14) {
            0..=4 => set_field(
                &mut lines[l],
                f,
                EDGE_VALUES[rng.random_range(0..EDGE_VALUES.len())],
            ),
            5 | 6 => {
                let scaled = scale(lines[l].get(f).map_or("", String::as_str), rng);
                set_field(&mut lines[l], f, &scaled);
            }
            7 => {
                if f < lines[l].len() {
                    lines[l].remove(f);
                }
            }
            8 => {
                let copy = lines[l].get(f).cloned().unwrap_or_default();
                lines[l].insert(f, copy);
            }
            9 => {
                let row = lines[l].clone();
                lines.insert(rng.random_range(0..=lines.len()), row);
            }
            10 => {
                lines.remove(l);
            }
            11 => {
                let other = rng.random_range(0..lines.len());
                lines.swap(l, other);
            }
            12 => eol = ["\r\n", "\r", "\n\n", "\n \n"][rng.random_range(0..4)],
            _ => damage_bytes = true,
        }
    }
    let mut out: String = lines
        .iter()
        .map(|fields| fields.join(","))
        .collect::<Vec<_>>()
        .join(eol);
    out.push_str(eol);
    if damage_bytes {
        out = damage(&out, rng);
    }
    out
}

/// The text cut at a random byte, or with a separator, quote, control or digit byte inserted.
fn damage(text: &str, rng: &mut StdRng) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = rng.random_range(0..=bytes.len());
    if rng.random_bool(0.5) {
        bytes.truncate(at);
    } else {
        let stray = [b'\0', b'\r', b'\n', b'"', b',', b' ', b'9', b'-'];
        bytes.insert(at, stray[rng.random_range(0..stray.len())]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn set_field(fields: &mut Vec<String>, f: usize, value: &str) {
    match fields.get_mut(f) {
        Some(slot) => *slot = value.to_string(),
        None => fields.push(value.to_string()),
    }
}

/// A number scaled by a power of ten, negated or nudged; a non-number becomes one.
fn scale(value: &str, rng: &mut StdRng) -> String {
    let v: f64 = value.parse().unwrap_or(1.0);
    let scaled = match rng.random_range(0..4) {
        0 => v * 10f64.powi(rng.random_range(1..=20)),
        1 => v / 10f64.powi(rng.random_range(1..=6)),
        2 => -v,
        _ => v + 1.0,
    };
    if scaled.fract() == 0.0 && scaled.abs() < 1e19 && rng.random_bool(0.5) {
        format!("{}", scaled as i128)
    } else {
        format!("{scaled}")
    }
}

/// The case number that tells the watchdog its run is over.
const FINISHED: u64 = u64::MAX;

/// What the currently running case is, for the watchdog's report.
#[derive(Default)]
struct Current {
    case: AtomicU64,
    input: Mutex<String>,
}

/// Aborts the process, printing the input, when one case runs over [`CASE_LIMIT`].
fn watchdog(current: Arc<Current>) {
    std::thread::spawn(move || {
        let mut seen = u64::MAX;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let case = current.case.load(Ordering::Relaxed);
            if case == FINISHED {
                return;
            }
            if case != seen {
                seen = case;
                since = Instant::now();
            } else if since.elapsed() > CASE_LIMIT {
                let input = current.input.lock().map(|s| s.clone()).unwrap_or_default();
                eprintln!("fuzz case {case} hangs (over {CASE_LIMIT:?}); input:\n{input:?}");
                std::process::abort();
            }
        }
    });
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs `cases` mutations of `seeds` through `check`, which gets the mutated text and returns
/// an error description when the outcome is wrong. Panics are caught and reported with the
/// input, which is also saved for the regression folder.
fn fuzz(
    kind: &str,
    seeds: &[&str],
    check: impl Fn(&str, &mut StdRng) -> Result<(), String>,
) -> u64 {
    let cases = env_u64("MURI_FUZZ_CASES", 3_000);
    let base = env_u64("MURI_FUZZ_SEED", 19);
    let current = Arc::new(Current::default());
    watchdog(current.clone());
    let mut failures = Vec::new();
    for case in 0..cases {
        let mut rng = StdRng::seed_from_u64(base.wrapping_mul(1_000_003).wrapping_add(case));
        let seed = seeds[rng.random_range(0..seeds.len())];
        let mut input = seed.to_string();
        let rounds = if rng.random_bool(0.7) { 1 } else { 2 };
        for _ in 0..rounds {
            input = mutate(&input, &mut rng);
        }
        *current.input.lock().unwrap() = input.clone();
        current.case.store(case, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input, &mut rng)))
            .unwrap_or_else(|_| Err("panicked".into()));
        if let Err(why) = outcome {
            let saved = save_failure(kind, case, &input);
            failures.push(format!(
                "{kind} case {case}: {why}; input {input:?} (saved as {})",
                saved.display()
            ));
        }
    }
    current.case.store(FINISHED, Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {cases} {kind} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases
}

fn save_failure(kind: &str, case: u64, input: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{case}.csv"));
    let _ = std::fs::write(&path, input);
    path
}

/// A refusal is fine when it names the file; anything else is a failure.
fn names_file(err: &dyn std::fmt::Display, file: &str) -> Result<(), String> {
    let msg = err.to_string();
    if msg.contains(file) {
        Ok(())
    } else {
        Err(format!("error does not name {file}: {msg}"))
    }
}

/// Simulates `trace` on `spec` under a policy drawn by `rng`; checks that every finished job
/// has finite, ordered times and that finished + unfinished = all jobs.
fn simulate_small(trace: &Trace, spec: ClusterSpec, rng: &mut StdRng) -> Result<(), String> {
    let policy = PolicyKind::ALL[rng.random_range(0..PolicyKind::ALL.len())].name();
    let opts = PolicyOptions {
        packing_num: rng.random_range(2..=4),
        ..PolicyOptions::default()
    };
    let result = match simulate(trace, spec, policy, opts, None) {
        Ok(r) => r,
        Err(e) => return names_file(&format!("{e:#}"), &trace.source),
    };
    if result.jobs.len() + result.unfinished != trace.jobs.len() {
        return Err(format!(
            "{policy}: {} finished + {} unfinished of {} jobs",
            result.jobs.len(),
            result.unfinished,
            trace.jobs.len()
        ));
    }
    for r in &result.jobs {
        let ordered = r.submit_time <= r.start_time && r.start_time <= r.end_time;
        if !(r.jct.is_finite() && r.end_time.is_finite() && ordered) {
            return Err(format!("{policy}: job {} has times {r:?}", r.job_id));
        }
    }
    Ok(())
}

#[test]
fn traces_parse_and_simulate_or_are_refused_by_file() {
    let specs: Vec<ClusterSpec> = SPECS
        .iter()
        .map(|s| ClusterSpec::parse(s, Path::new("spec.csv")).unwrap())
        .collect();
    let simulated = AtomicU64::new(0);
    let cases = fuzz(
        "trace",
        &[TRACE, TRACE_MINIMAL],
        |text, rng| match Trace::parse(text, Path::new("fuzz-trace.csv"), "fuzz".into()) {
            Err(e) => names_file(&e, "fuzz-trace.csv"),
            Ok(trace) if trace.jobs.len() <= SIMULATE_MAX_JOBS => {
                simulated.fetch_add(1, Ordering::Relaxed);
                let spec = specs[rng.random_range(0..specs.len())];
                simulate_small(&trace, spec, rng)
            }
            Ok(_) => Ok(()),
        },
    );
    // Mutations must leave enough traces valid to exercise the simulator, not only the parser.
    let simulated = simulated.into_inner();
    eprintln!("{simulated} of {cases} mutated traces parsed and were simulated");
    assert!(
        simulated * 10 >= cases,
        "only {simulated} of {cases} mutated traces were simulated"
    );
}

#[test]
fn cluster_specs_parse_within_limits_or_are_refused_by_file() {
    let trace = Trace::parse(TRACE, Path::new("small.csv"), "small".into()).unwrap();
    fuzz("spec", &SPECS, |text, rng| {
        match ClusterSpec::parse(text, Path::new("fuzz-spec.csv")) {
            Err(e) => names_file(&e, "fuzz-spec.csv"),
            Ok(spec) => {
                spec.check()
                    .map_err(|(f, m)| format!("accepted a spec over the limits: {f}: {m}"))?;
                // Fits-checks on any size are cheap; simulating is kept to small clusters.
                for gpus in [1, 7, 64, u32::MAX] {
                    let _ = spec.can_ever_fit(gpus);
                }
                if spec.num_gpus() <= 64 {
                    simulate_small(&trace, spec, rng)
                } else {
                    Ok(())
                }
            }
        }
    });
}

/// A `job.csv` and a `cluster.csv` written by a real run, the seeds of the log fuzzers.
fn run_logs() -> (String, String) {
    let trace = Trace::parse(TRACE, Path::new("small.csv"), "small".into()).unwrap();
    let spec = ClusterSpec::parse(SPECS[0], Path::new("spec.csv")).unwrap();
    let result = simulate(
        &trace,
        spec,
        "multi-resource-blossom-same-gpu",
        PolicyOptions::default(),
        None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    output::write_logs(dir.path(), &result).unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    (read("job.csv"), read("cluster.csv"))
}

#[test]
fn job_logs_give_finite_metrics_or_are_refused_by_file() {
    let (job_csv, _) = run_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz-job.csv");
    fuzz("jobcsv", &[&job_csv], |text, _| {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        match output::read_job_csv(&path) {
            Err(e) => names_file(&e, "fuzz-job.csv"),
            Ok(records) => match Summary::from_records(&records) {
                None => Ok(()),
                Some(s) => {
                    let values = [s.avg_jct, s.makespan, s.p99_jct, s.avg_queueing_delay];
                    if values.iter().all(|v| v.is_finite()) {
                        Ok(())
                    } else {
                        Err(format!(
                            "accepted a log whose metrics are not finite: {}",
                            s.calc_line()
                        ))
                    }
                }
            },
        }
    });
}

#[test]
fn cluster_logs_parse_or_are_refused_by_file() {
    let (_, cluster_csv) = run_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz-cluster.csv");
    fuzz("clustercsv", &[&cluster_csv], |text, _| {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        match output::read_cluster_csv(&path) {
            Err(e) => names_file(&e, "fuzz-cluster.csv"),
            Ok(rows) => match output::gpu_utilisation(&rows) {
                Some(u) if !u.is_finite() => Err(format!("utilisation {u}")),
                _ => Ok(()),
            },
        }
    });
}
