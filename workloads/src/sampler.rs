//! What a trainer process uses while it trains: CPU, memory and storage I/O from `/proc`, and
//! GPU utilisation from NVML when the driver's `libnvidia-ml.so.1` can be loaded.
//!
//! The scheduler logs these per round in `cluster.csv` (queue length, blocking index and
//! utilisation per resource, as Muri's testbed does for its Figure 8). Muri's testbed reads the
//! node-wide `%Cpu(s)` line of `top` and computes I/O from constants; here CPU and I/O are the
//! trainer process's own (all its threads: the data-loading helpers included), so groups on a
//! shared node do not count each other's load. NVML is loaded at run time, so the same binary
//! runs on machines without a GPU driver: there the GPU figure is simply absent.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often NVML's utilisation counter is read (it averages over its own ~1/6–1 s window).
const GPU_POLL: Duration = Duration::from_millis(200);

/// One process's usage over a sampled span of wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds (user + system, all threads) per wall second: 1.0 = one core kept busy.
    pub cpu_cores: f64,
    /// Peak resident set size seen, bytes.
    pub rss_bytes: u64,
    /// Bytes read from / written to storage per second (`/proc/<pid>/io` read_bytes and
    /// write_bytes: page-cache hits are not storage reads).
    pub read_bps: f64,
    pub write_bps: f64,
    /// Mean GPU utilisation in [0, 1] from NVML, `None` when NVML is not available.
    pub gpu_util: Option<f64>,
    pub wall_s: f64,
}

/// Cumulative counters of one process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    cpu_ticks: u64,
    rss_bytes: u64,
    read_bytes: u64,
    write_bytes: u64,
}

/// Reads `/proc/<pid>/{stat,status,io}`; a file that cannot be read or parsed counts as 0
/// (a kernel without per-process I/O accounting has no `io`), never as an error: the figures
/// are measurements, not the trainer's job.
fn read_counters(proc_dir: &Path) -> Counters {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
    let io = std::fs::read_to_string(proc_dir.join("io")).unwrap_or_default();
    Counters {
        cpu_ticks: parse_cpu_ticks(&stat).unwrap_or(0),
        rss_bytes: parse_kv(&status, "VmRSS:").map_or(0, |kb| kb * 1024),
        read_bytes: parse_kv(&io, "read_bytes:").unwrap_or(0),
        write_bytes: parse_kv(&io, "write_bytes:").unwrap_or(0),
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `key` on its line (`VmRSS:   1234 kB`, `read_bytes: 42`).
fn parse_kv(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux fixes USER_HZ at 100 for
/// user space on every architecture it supports.
const TICKS_PER_S: f64 = 100.0;

/// Samples one process from [`Sampler::start`] to [`Sampler::finish`]; a helper thread polls
/// NVML and the resident set size meanwhile.
pub struct Sampler {
    proc_dir: std::path::PathBuf,
    started: Instant,
    first: Counters,
    stop: Arc<AtomicBool>,
    polled: Arc<Mutex<Polled>>,
    poller: Option<JoinHandle<()>>,
}

#[derive(Debug, Default, Clone)]
struct Polled {
    peak_rss: u64,
    gpu_sum: f64,
    gpu_samples: u64,
}

impl Sampler {
    /// Samples this process; `gpu_index` is the NVML index of its GPU.
    pub fn start(gpu_index: u32) -> Sampler {
        Sampler::start_for(Path::new("/proc/self"), gpu_index)
    }

    fn start_for(proc_dir: &Path, gpu_index: u32) -> Sampler {
        let first = read_counters(proc_dir);
        let stop = Arc::new(AtomicBool::new(false));
        let polled = Arc::new(Mutex::new(Polled {
            peak_rss: first.rss_bytes,
            ..Polled::default()
        }));
        let poller = {
            let (stop, polled, dir) = (stop.clone(), polled.clone(), proc_dir.to_path_buf());
            std::thread::Builder::new()
                .name("usage-sampler".into())
                .spawn(move || poll(&dir, gpu_index, &stop, &polled))
                .map_err(|e| tracing::warn!("no usage sampler thread: {e}"))
                .ok()
        };
        Sampler {
            proc_dir: proc_dir.to_path_buf(),
            started: Instant::now(),
            first,
            stop,
            polled,
            poller,
        }
    }

    /// Stops sampling and returns the usage since [`Sampler::start`].
    pub fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
        let last = read_counters(&self.proc_dir);
        let wall_s = self.started.elapsed().as_secs_f64();
        let polled = self.polled.lock().map(|p| (*p).clone()).unwrap_or_default();
        let per_s = |a: u64, b: u64| {
            if wall_s > 0.0 {
                b.saturating_sub(a) as f64 / wall_s
            } else {
                0.0
            }
        };
        Usage {
            cpu_cores: per_s(self.first.cpu_ticks, last.cpu_ticks) / TICKS_PER_S,
            rss_bytes: polled.peak_rss.max(last.rss_bytes),
            read_bps: per_s(self.first.read_bytes, last.read_bytes),
            write_bps: per_s(self.first.write_bytes, last.write_bytes),
            gpu_util: (polled.gpu_samples > 0).then(|| polled.gpu_sum / polled.gpu_samples as f64),
            wall_s,
        }
    }
}

fn poll(proc_dir: &Path, gpu_index: u32, stop: &AtomicBool, polled: &Mutex<Polled>) {
    let nvml = Nvml::load(gpu_index);
    while !stop.load(Ordering::Relaxed) {
        let rss = read_counters(proc_dir).rss_bytes;
        let gpu = nvml.as_ref().and_then(Nvml::utilisation);
        if let Ok(mut p) = polled.lock() {
            p.peak_rss = p.peak_rss.max(rss);
            if let Some(u) = gpu {
                p.gpu_sum += u;
                p.gpu_samples += 1;
            }
        }
        std::thread::sleep(GPU_POLL);
    }
}

/// The NVML index of this rank's GPU: the first entry of `CUDA_VISIBLE_DEVICES` when it is a
/// number, else 0.
pub fn gpu_index_from_env() -> u32 {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').next().and_then(|s| s.trim().parse().ok()))
        .unwrap_or(0)
}

/// NVML's `nvmlUtilization_t`.
#[repr(C)]
#[derive(Default)]
struct NvmlUtilization {
    gpu: u32,
    memory: u32,
}

type NvmlDevice = *mut std::ffi::c_void;
const NVML_SUCCESS: i32 = 0;

/// The few NVML entry points used, resolved from the driver's library at run time.
struct Nvml {
    _lib: libloading::Library,
    device: NvmlDevice,
    utilization_rates: unsafe extern "C" fn(NvmlDevice, *mut NvmlUtilization) -> i32,
    shutdown: unsafe extern "C" fn() -> i32,
}

impl Nvml {
    /// `None` (logged at debug level) when the library, a symbol or the device is missing.
    fn load(index: u32) -> Option<Nvml> {
        match Nvml::try_load(index) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!("no GPU utilisation: {e}");
                None
            }
        }
    }

    fn try_load(index: u32) -> anyhow::Result<Nvml> {
        // SAFETY: loading the driver's NVML runs no initialiser with preconditions; the
        // symbols are declared with NVML's documented C signatures (nvml.h, API v2).
        unsafe {
            let lib = libloading::Library::new("libnvidia-ml.so.1")?;
            let init: unsafe extern "C" fn() -> i32 = *lib.get(b"nvmlInit_v2\0")?;
            let by_index: unsafe extern "C" fn(u32, *mut NvmlDevice) -> i32 =
                *lib.get(b"nvmlDeviceGetHandleByIndex_v2\0")?;
            let utilization_rates = *lib.get(b"nvmlDeviceGetUtilizationRates\0")?;
            let shutdown: unsafe extern "C" fn() -> i32 = *lib.get(b"nvmlShutdown\0")?;
            anyhow::ensure!(init() == NVML_SUCCESS, "nvmlInit_v2 failed");
            let mut device: NvmlDevice = std::ptr::null_mut();
            if by_index(index, &mut device) != NVML_SUCCESS {
                shutdown();
                anyhow::bail!("NVML has no device {index}");
            }
            Ok(Nvml {
                _lib: lib,
                device,
                utilization_rates,
                shutdown,
            })
        }
    }

    /// The device's utilisation over NVML's last sample window, in [0, 1].
    fn utilisation(&self) -> Option<f64> {
        let mut u = NvmlUtilization::default();
        // SAFETY: `device` came from NVML on this library, which stays loaded and initialised.
        let rc = unsafe { (self.utilization_rates)(self.device, &mut u) };
        (rc == NVML_SUCCESS).then(|| f64::from(u.gpu.min(100)) / 100.0)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: balances the successful nvmlInit_v2 of `try_load`.
        unsafe { (self.shutdown)() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_and_io_values_are_read_by_key() {
        let status = "Name:\tx\nVmPeak:\t 900 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(parse_kv(status, "VmRSS:"), Some(1234));
        let io = "rchar: 10\nread_bytes: 4096\nwrite_bytes: 0\n";
        assert_eq!(parse_kv(io, "read_bytes:"), Some(4096));
        assert_eq!(parse_kv(io, "cancelled_write_bytes:"), None);
    }

    /// CPU seconds this process has used, from the C library (not from `/proc`).
    fn process_cpu_s() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write to.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    #[test]
    fn cpu_time_matches_the_c_librarys_process_clock() {
        // Busy until the process has used 0.3 CPU seconds, however loaded the machine is.
        let sampler = Sampler::start(0);
        let from = process_cpu_s();
        let mut x = 0u64;
        while process_cpu_s() - from < 0.3 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let usage = sampler.finish();
        let used = usage.cpu_cores * usage.wall_s;
        // /proc counts in 10 ms ticks; other tests of this binary may run meanwhile.
        assert!((0.28..1.0).contains(&used), "{used} CPU s: {usage:?}");
        assert!(usage.rss_bytes > 1 << 20, "{usage:?}");
    }

    #[test]
    fn a_missing_proc_dir_reads_as_zero_usage() {
        let usage = Sampler::start_for(Path::new("/nonexistent/proc/1"), 0).finish();
        assert_eq!(usage.cpu_cores, 0.0);
        assert_eq!(usage.rss_bytes, 0);
        assert_eq!(usage.read_bps, 0.0);
    }
}
