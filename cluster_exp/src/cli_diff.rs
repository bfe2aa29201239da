//! `muri diff A B`: the first differing decision of two decision logs (`--decisions`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use muri::round::{first_difference, DECISIONS_HEADER};

#[derive(Args)]
pub struct DiffArgs {
    /// A decision log (`muri simulate --decisions` or `muri scheduler --decisions`).
    left: PathBuf,
    /// The decision log to compare it with.
    right: PathBuf,
}

/// Exit status 0 when the logs are identical, 1 when they differ (the first difference is
/// printed), 2 when a log cannot be read.
pub fn run_diff(args: &DiffArgs) -> ExitCode {
    let (left, right) = match (read_log(&args.left), read_log(&args.right)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match first_difference(&left, &right) {
        None => {
            let decisions = left.lines().count().saturating_sub(1);
            let _ = outln!("identical: {decisions} decisions");
            ExitCode::SUCCESS
        }
        Some(d) => {
            let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "(end of file)".into());
            let _ = outln!("first difference at line {}:", d.line);
            let _ = outln!("  {}: {}", args.left.display(), show(&d.left));
            let _ = outln!("  {}: {}", args.right.display(), show(&d.right));
            ExitCode::from(1)
        }
    }
}

/// Reads a decision log and checks its header, so that two unrelated CSVs are not compared.
fn read_log(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the decision log {}", path.display()))?;
    let header = text.lines().next().unwrap_or("").trim_end();
    anyhow::ensure!(
        header == DECISIONS_HEADER,
        "{}: line 1: expected the decision-log header `{DECISIONS_HEADER}`, found `{header}`",
        path.display()
    );
    Ok(text)
}
