//! Timing of the blossom matching port on dense complete graphs, as the simulator builds
//! them (every pair of same-GPU jobs gets a used-ratio weight in 0.2–0.7).
//!
//! `cargo bench --bench matching` prints the median wall time per solve for 64, 128, 256
//! and 512 vertices, with arbitrary float weights and with 3-decimal weights (many ties).
//!
//! With `MATCH_REPLAY=FILE` it instead replays recorded instances and checks every result:
//! one [`RecordedSolve`] line per solve, as `MURI_RECORD_MATCHINGS=FILE muri simulate …`
//! writes them. With `MATCH_REPLAY_PLAIN=1` as well, it also solves each instance without
//! its classes (the plain port, the oracle for the twin shortcuts) and checks those mates.

use muri::matching::{BlossomMatcher, RecordedSolve, WeightMatrix};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Instant;

/// Complete graph with symmetric weights in 0.2–0.7, optionally rounded to 3 decimals.
fn complete_graph(n: usize, seed: u64, rounded: bool) -> WeightMatrix {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = WeightMatrix::new(n);
    for u in 0..n {
        for v in u + 1..n {
            let mut w: f64 = rng.random_range(0.2..0.7);
            if rounded {
                w = (w * 1000.0).round() / 1000.0;
            }
            g.set(u, v, w);
            g.set(v, u, w);
        }
    }
    g
}

/// Median over `runs` solves (one graph per run, one reused solver) in milliseconds.
fn median_ms(n: usize, runs: usize, rounded: bool) -> f64 {
    let graphs: Vec<WeightMatrix> = (0..runs)
        .map(|i| complete_graph(n, 1000 + i as u64, rounded))
        .collect();
    let mut solver = BlossomMatcher::new();
    black_box(solver.solve(&graphs[0])); // warm-up: buffers sized once
    let mut times: Vec<f64> = graphs
        .iter()
        .map(|g| {
            let start = Instant::now();
            black_box(solver.solve(black_box(g)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Solves every recorded instance of `path` with one solver, checks the mates and prints
/// the total time.
fn replay(path: &str) {
    let text = std::fs::read_to_string(path).expect("readable replay file");
    let instances: Vec<RecordedSolve> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            RecordedSolve::parse(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1))
        })
        .collect();
    let mut solver = BlossomMatcher::new();
    let start = Instant::now();
    let mut wrong = 0;
    for r in &instances {
        if solver.solve(&r.graph) != r.mates {
            wrong += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{} instances, {wrong} differ, {secs:.3} s", instances.len());
    assert_eq!(wrong, 0, "replayed matchings differ");
    if std::env::var_os("MATCH_REPLAY_PLAIN").is_some() {
        // The oracle: the same weights without classes take the plain port's path.
        let start = Instant::now();
        let plain_wrong = instances
            .iter()
            .filter(|r| solver.solve(&r.graph.without_classes()) != r.mates)
            .count();
        let secs = start.elapsed().as_secs_f64();
        println!("plain port: {plain_wrong} differ, {secs:.3} s");
        assert_eq!(plain_wrong, 0, "the plain port's matchings differ");
    }
}

fn main() {
    if let Ok(path) = std::env::var("MATCH_REPLAY") {
        replay(&path);
        return;
    }
    println!("{:>6} {:>14} {:>14}", "nodes", "float (ms)", "3-dec (ms)");
    for &(n, runs) in &[(64, 21), (128, 15), (256, 9), (512, 5)] {
        let float_ms = median_ms(n, runs, false);
        let rounded_ms = median_ms(n, runs, true);
        println!("{n:>6} {float_ms:>14.3} {rounded_ms:>14.3}");
    }
}
