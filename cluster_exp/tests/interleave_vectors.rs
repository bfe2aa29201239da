//! The interleaving model against `../shared/reference/pipeline_testvectors.csv`: group
//! iteration times of 135 groups computed by the reference's model.

mod common;

use muri::interleave::{InterleaveModel, SlowdownFactors, StageOrdering, StageProfile};
use muri::job::SOLO_ITERATION_OVERHEAD;

/// Splits one CSV line, honouring double quotes.
fn split(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs().max(1e-12)
}

#[test]
fn model_reproduces_reference_vectors() {
    let path = common::shared().join("reference/pipeline_testvectors.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let model = InterleaveModel::default();
    let raw = InterleaveModel {
        stages: 4,
        factors: SlowdownFactors::NONE,
    };
    let mut checked = 0;
    for line in text.lines().skip(1).map(|l| l.trim_end_matches('\r')) {
        let f = split(line);
        let its: Vec<f64> = f[2].split(' ').map(|v| v.parse().unwrap()).collect();
        let jobs: Vec<StageProfile> = f[3]
            .split('|')
            .zip(&its)
            .map(|(rt, &it)| {
                let v: Vec<f64> = rt.trim().split(',').map(|x| x.parse().unwrap()).collect();
                StageProfile {
                    stages: [v[0] / 1000.0, v[1] / 1000.0, v[2] / 1000.0],
                    solo_iteration_time: it * SOLO_ITERATION_OVERHEAD / 1000.0,
                }
            })
            .collect();
        let want: Vec<Option<f64>> = f[4..9].iter().map(|v| v.parse().ok()).collect();
        let got = [
            Some(raw.group_iteration_time(&jobs, StageOrdering::Best)),
            Some(model.group_iteration_time(&jobs, StageOrdering::Best)),
            Some(model.group_iteration_time(&jobs, StageOrdering::Worst)),
            (jobs.len() > 1).then(|| model.used_ratio(&jobs, StageOrdering::Best)),
            Some(model.used_ratio(&jobs[..1], StageOrdering::Best)),
        ];
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            if let (Some(g), Some(w)) = (g, w) {
                assert!(close(*g, *w), "{}: column {} got {g} want {w}", f[0], k + 4);
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} values checked");
}
