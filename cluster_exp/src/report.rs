//! Result tables of `muri simulate`, `muri calc` and `muri calc --compare`, printed as an
//! aligned table, CSV or JSON (`--format`), with ratios to one named baseline.

use serde::Serialize;

use crate::metrics::Summary;
use crate::policy::PolicyKind;

/// How a result table is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One header line, one row per run.
    Csv,
    /// A JSON object: the baseline and one object per run.
    Json,
}

/// One run's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    /// The policy's paper name, or the run directory for runs of unknown policies.
    pub run: String,
    /// The policy's reference name when the run is of a known policy.
    pub policy: Option<String>,
    pub jobs: usize,
    pub avg_jct_s: f64,
    pub makespan_s: f64,
    pub p99_jct_s: f64,
    pub p50_jct_s: f64,
    pub p90_jct_s: f64,
    pub avg_queueing_delay_s: f64,
    pub preemptions: u64,
    /// Time-weighted share of GPUs busy (0..1), when cluster.csv is known.
    pub gpu_utilisation: Option<f64>,
    /// Ratios to the baseline row (absent without a baseline).
    pub avg_jct_ratio: Option<f64>,
    pub makespan_ratio: Option<f64>,
    pub p99_jct_ratio: Option<f64>,
    /// Simulation seconds, when the run was just made.
    pub wall_s: Option<f64>,
}

/// Rows with their baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The `run` label of the row every ratio is taken to.
    pub baseline: Option<String>,
    pub rows: Vec<ReportRow>,
}

/// One run before ratios: a label, its policy (if known), its summary and extras.
pub struct RunFigures {
    pub label: String,
    pub policy: Option<PolicyKind>,
    pub summary: Summary,
    pub gpu_utilisation: Option<f64>,
    pub wall_s: Option<f64>,
}

impl Report {
    /// Rows in the given order, ratios to the baseline: Muri-S when present, else Muri-L,
    /// else the first run.
    pub fn new(runs: Vec<RunFigures>) -> Report {
        let kinds: Vec<PolicyKind> = runs.iter().filter_map(|r| r.policy).collect();
        let base_idx = PolicyKind::baseline_among(&kinds)
            .and_then(|k| runs.iter().position(|r| r.policy == Some(k)))
            .or(if runs.is_empty() { None } else { Some(0) });
        let base = base_idx.map(|i| runs[i].summary);
        let ratio = |v: f64, f: fn(&Summary) -> f64| base.map(|b| v / f(&b));
        let baseline = base_idx.map(|i| runs[i].label.clone());
        let rows = runs
            .into_iter()
            .map(|r| {
                let s = r.summary;
                ReportRow {
                    run: r.label,
                    policy: r.policy.map(|k| k.name().to_string()),
                    jobs: s.jobs,
                    avg_jct_s: s.avg_jct,
                    makespan_s: s.makespan,
                    p99_jct_s: s.p99_jct,
                    p50_jct_s: s.p50_jct,
                    p90_jct_s: s.p90_jct,
                    avg_queueing_delay_s: s.avg_queueing_delay,
                    preemptions: s.preemptions,
                    gpu_utilisation: r.gpu_utilisation,
                    avg_jct_ratio: ratio(s.avg_jct, |b| b.avg_jct),
                    makespan_ratio: ratio(s.makespan, |b| b.makespan),
                    p99_jct_ratio: ratio(s.p99_jct, |b| b.p99_jct),
                    wall_s: r.wall_s,
                }
            })
            .collect();
        Report { baseline, rows }
    }

    /// The report in `format`, ending with a newline.
    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Table => self.table(),
            ReportFormat::Csv => self.csv(),
            ReportFormat::Json => {
                serde_json::to_string_pretty(self).expect("plain data always encodes") + "\n"
            }
        }
    }

    fn table(&self) -> String {
        let base = format!("×{}", self.baseline.as_deref().unwrap_or("-"));
        let width = self
            .rows
            .iter()
            .map(|r| r.run.chars().count())
            .max()
            .unwrap_or(0)
            .max(18);
        let rw = base.chars().count().max(9);
        let with_wall = self.rows.iter().any(|r| r.wall_s.is_some());
        let mut out = format!(
            "{:<width$} {:>6} {:>14} {:>rw$} {:>14} {:>rw$} {:>14} {:>rw$}",
            "policy", "jobs", "avg JCT (s)", base, "makespan (s)", base, "99th JCT (s)", base
        );
        if with_wall {
            out.push_str(&format!(" {:>9}", "wall (s)"));
        }
        out.push('\n');
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |v| format!("{v:.3}"));
        for r in &self.rows {
            out.push_str(&format!(
                "{:<width$} {:>6} {:>14.1} {:>rw$} {:>14.1} {:>rw$} {:>14.1} {:>rw$}",
                r.run,
                r.jobs,
                r.avg_jct_s,
                ratio(r.avg_jct_ratio),
                r.makespan_s,
                ratio(r.makespan_ratio),
                r.p99_jct_s,
                ratio(r.p99_jct_ratio),
            ));
            if with_wall {
                out.push_str(&format!(
                    " {:>9}",
                    r.wall_s.map_or("-".to_string(), |w| format!("{w:.3}"))
                ));
            }
            out.push('\n');
        }
        out
    }

    fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let opt = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
        // Writing to a Vec cannot fail.
        let _ = w.write_record([
            "run",
            "policy",
            "jobs",
            "avg_jct_s",
            "makespan_s",
            "p99_jct_s",
            "p50_jct_s",
            "p90_jct_s",
            "avg_queueing_delay_s",
            "preemptions",
            "gpu_utilisation",
            "avg_jct_ratio",
            "makespan_ratio",
            "p99_jct_ratio",
            "wall_s",
            "baseline",
        ]);
        for r in &self.rows {
            let _ = w.write_record([
                r.run.clone(),
                r.policy.clone().unwrap_or_default(),
                r.jobs.to_string(),
                r.avg_jct_s.to_string(),
                r.makespan_s.to_string(),
                r.p99_jct_s.to_string(),
                r.p50_jct_s.to_string(),
                r.p90_jct_s.to_string(),
                r.avg_queueing_delay_s.to_string(),
                r.preemptions.to_string(),
                opt(r.gpu_utilisation),
                opt(r.avg_jct_ratio),
                opt(r.makespan_ratio),
                opt(r.p99_jct_ratio),
                opt(r.wall_s),
                self.baseline.clone().unwrap_or_default(),
            ]);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(kind: PolicyKind, avg: f64) -> RunFigures {
        RunFigures {
            label: kind.paper_name().to_string(),
            policy: Some(kind),
            summary: Summary {
                jobs: 2,
                avg_jct: avg,
                makespan: 2.0 * avg,
                p99_jct: 3.0 * avg,
                p50_jct: avg,
                p90_jct: avg,
                p999_jct: avg,
                avg_queueing_delay: 1.0,
                preemptions: 4,
            },
            gpu_utilisation: Some(0.5),
            wall_s: None,
        }
    }

    #[test]
    fn ratios_are_to_muri_s_wherever_it_sorts() {
        let r = Report::new(vec![
            figures(PolicyKind::Srtf, 30.0),
            figures(PolicyKind::MuriS, 10.0),
        ]);
        assert_eq!(r.baseline.as_deref(), Some("Muri-S"));
        assert_eq!(r.rows[0].avg_jct_ratio, Some(3.0));
        assert_eq!(r.rows[1].makespan_ratio, Some(1.0));
        let table = r.render(ReportFormat::Table);
        assert!(table.lines().next().unwrap().contains("×Muri-S"), "{table}");
    }

    #[test]
    fn csv_and_json_carry_every_figure() {
        let r = Report::new(vec![
            figures(PolicyKind::MuriL, 10.0),
            figures(PolicyKind::Fifo, 20.0),
        ]);
        let csv = r.render(ReportFormat::Csv);
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("run,policy,jobs,avg_jct_s"));
        assert_eq!(
            lines.nth(1).unwrap(),
            "FIFO,fifo,2,20,40,60,20,20,1,4,0.5,2,2,2,,Muri-L"
        );
        let json: serde_json::Value = serde_json::from_str(&r.render(ReportFormat::Json)).unwrap();
        assert_eq!(json["baseline"], "Muri-L");
        assert_eq!(json["rows"][1]["avg_jct_ratio"], 2.0);
        assert_eq!(json["rows"][0]["preemptions"], 4);
    }
}
