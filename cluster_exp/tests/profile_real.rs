//! `muri profile` with the real trainer (feature `torch`): solo stage times come out in trace
//! units, land in a catalogue that `muri trace gen` reads, and a pair is measured against the
//! interleaving model. No timing assertions (noisy machines): only structure and consistency.
#![cfg(feature = "torch")]

use std::process::Command;

fn muri(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "muri {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `label` on its line of `text`.
fn value_after(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label} in {text}"));
    let rest = &line[line.find(label).unwrap() + label.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn profile_appends_to_a_catalogue_and_measures_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = dir.path().join("cat.csv");
    let common = [
        "--iterations",
        "4",
        "--warmup",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut args = vec![
        "profile", "--model", "dqn", "--batch", "16", "--with", "gpt2:4",
    ];
    args.extend(common);
    args.extend(["--append", cat.to_str().unwrap()]);
    let text = muri(&args);
    for label in [
        "resource_time_0 (data)",
        "resource_time_1 (compute)",
        "iteration_time",
    ] {
        assert!(value_after(&text, label) > 0.0, "{label}: {text}");
    }
    let predicted = value_after(&text, "model prediction");
    let measured = value_after(&text, "measured group period");
    let solo_sum = value_after(&text, "sum of solo iterations");
    assert!(
        predicted > 0.0 && measured > 0.0 && solo_sum > 0.0,
        "{text}"
    );

    let catalogue = std::fs::read_to_string(&cat).unwrap();
    let rows: Vec<&str> = catalogue.lines().collect();
    assert_eq!(rows.len(), 3, "header + dqn + gpt2: {catalogue}");
    assert!(rows[1].starts_with("dqn,1,16,") && rows[2].starts_with("gpt2,1,4,"));

    // The measured profiles drive trace generation.
    let trace = muri(&[
        "trace",
        "gen",
        "--catalogue",
        cat.to_str().unwrap(),
        "--models",
        "gpt2",
        "--gpu-mix",
        "1:1",
        "--jobs",
        "2",
    ]);
    let gpt2_iteration = rows[2].split(',').nth(3).unwrap();
    for row in trace.lines().skip(1) {
        assert_eq!(row.split(',').nth(8), Some(gpt2_iteration), "{row}");
    }
}
