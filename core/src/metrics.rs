//! Metrics over job logs: what the reference `calc.py` prints, and more.

use crate::record::JobRecord;

/// Summary of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub jobs: usize,
    pub avg_jct: f64,
    pub makespan: f64,
    /// The reference's "99th": sorted JCTs at index `int(0.99·n)` (the maximum for n ≤ 100).
    pub p99_jct: f64,
    pub p50_jct: f64,
    pub p90_jct: f64,
    pub p999_jct: f64,
    pub avg_queueing_delay: f64,
    pub preemptions: u64,
}

/// Sorted-list element at `int(q·n)` (clamped), the reference's percentile rule.
pub fn index_percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[idx]
}

impl Summary {
    /// `None` when there are no jobs (the reference divides by zero there).
    pub fn from_records(records: &[JobRecord]) -> Option<Summary> {
        if records.is_empty() {
            return None;
        }
        let n = records.len();
        let mut jcts: Vec<f64> = records.iter().map(|r| r.jct).collect();
        let avg_jct = jcts.iter().sum::<f64>() / n as f64;
        jcts.sort_by(f64::total_cmp);
        let makespan = records
            .iter()
            .map(|r| r.end_time)
            .fold(f64::NEG_INFINITY, f64::max);
        let queueing: f64 = records.iter().map(|r| r.start_time - r.submit_time).sum();
        Some(Summary {
            jobs: n,
            avg_jct,
            makespan,
            p99_jct: index_percentile(&jcts, 0.99),
            p50_jct: index_percentile(&jcts, 0.5),
            p90_jct: index_percentile(&jcts, 0.9),
            p999_jct: index_percentile(&jcts, 0.999),
            avg_queueing_delay: queueing / n as f64,
            preemptions: records.iter().map(|r| r.preempt as u64).sum(),
        })
    }

    /// The reference's exact line.
    pub fn calc_line(&self) -> String {
        format!(
            "Total jobs: {}, avg JCT: {:.6}, makespan: {:.6}, 99th JCT: {:.6}",
            self.jobs, self.avg_jct, self.makespan, self.p99_jct
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_index_rule() {
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        // int(100 * 0.99) = 99: the maximum for n = 100.
        assert_eq!(index_percentile(&v, 0.99), 99.0);
        let v: Vec<f64> = (0..1494).map(f64::from).collect();
        assert_eq!(index_percentile(&v, 0.99), 1479.0);
    }
}
