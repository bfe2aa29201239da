//! `muri trace gen`: synthetic traces in the reference format.
//!
//! Arrivals are Poisson, GPU counts follow a given mix, models are drawn uniformly (or by
//! weight) from the catalogue, and durations are log-normal. Stage times come from the
//! catalogue of profiled models, so generated jobs interleave like the paper's.

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};

use crate::models::{Catalogue, MODELS};
use crate::trace::{JobSpec, Trace};

/// GPU-count mix of the paper's trace1 (share of 1-, 2-, 4-, 8-, 16- and 32-GPU jobs).
pub const DEFAULT_GPU_MIX: &str = "1:0.36,2:0.01,4:0.28,8:0.31,16:0.03,32:0.01";

/// Parameters of a generated trace. The defaults mimic the paper's trace1 (4 h median
/// duration with a heavy tail, about twice the load an 8×8 cluster can serve) and produce
/// the project's default trace, `trace-data/default.csv`.
#[derive(Debug, Clone)]
pub struct TraceGenConfig {
    pub jobs: usize,
    pub seed: u64,
    /// Mean seconds between arrivals (0 = everything arrives at t = 0).
    pub mean_interarrival_s: f64,
    /// (GPU count, weight).
    pub gpu_mix: Vec<(u32, f64)>,
    /// (model, weight).
    pub model_mix: Vec<(String, f64)>,
    /// Median job duration in seconds.
    pub median_duration_s: f64,
    /// σ of ln(duration).
    pub duration_sigma: f64,
    pub min_duration_s: f64,
    pub max_duration_s: f64,
    /// Share of opportunistic (priority 1) jobs, used by AntMan.
    pub opportunistic_share: f64,
    /// Where stage times come from (built-in, plus `--catalogue FILE`).
    pub catalogue: Catalogue,
}

impl Default for TraceGenConfig {
    fn default() -> Self {
        TraceGenConfig {
            jobs: 800,
            seed: 2,
            mean_interarrival_s: 7200.0,
            gpu_mix: parse_mix(DEFAULT_GPU_MIX).expect("valid"),
            model_mix: MODELS.iter().map(|m| (m.to_string(), 1.0)).collect(),
            median_duration_s: 4.0 * 3600.0,
            duration_sigma: 3.2,
            min_duration_s: 120.0,
            max_duration_s: 20.0 * 24.0 * 3600.0,
            opportunistic_share: 0.5,
            catalogue: Catalogue::default(),
        }
    }
}

/// Parses `"1:0.4,2:0.1"` into (GPU count, weight) pairs.
pub fn parse_mix(text: &str) -> anyhow::Result<Vec<(u32, f64)>> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (g, w) = part
            .split_once(':')
            .with_context(|| format!("`{part}`: expected GPUS:WEIGHT, e.g. 8:0.25"))?;
        let g: u32 = g
            .trim()
            .parse()
            .with_context(|| format!("`{part}`: bad GPU count"))?;
        let w: f64 = w
            .trim()
            .parse()
            .with_context(|| format!("`{part}`: bad weight"))?;
        if g == 0 || !w.is_finite() || w < 0.0 {
            bail!("`{part}`: GPU count must be positive and weight non-negative");
        }
        out.push((g, w));
    }
    if out.iter().all(|(_, w)| *w == 0.0) {
        bail!("`{text}`: the mix needs at least one positive weight");
    }
    Ok(out)
}

fn pick<'a, T>(rng: &mut impl Rng, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items.last().expect("non-empty mix").0
}

/// Generates a trace. Errors name the model/GPU pair the catalogue lacks.
pub fn generate(cfg: &TraceGenConfig, name: &str) -> anyhow::Result<Trace> {
    for (m, _) in &cfg.model_mix {
        for (g, _) in &cfg.gpu_mix {
            if cfg.catalogue.lookup(m, *g).is_none() {
                let sizes = cfg.catalogue.gpu_sizes(m);
                if sizes.is_empty() {
                    bail!(
                        "no model `{m}` in the catalogue (models: {})",
                        cfg.catalogue.models().join(", ")
                    );
                }
                let sizes: Vec<String> = sizes.iter().map(u32::to_string).collect();
                bail!(
                    "--gpu-mix: no profile for model `{m}` on {g} GPUs; `{m}` has profiles for \
                     {} GPUs (add one with `muri profile --append`, then --catalogue FILE)",
                    sizes.join(", ")
                );
            }
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let gaps = (cfg.mean_interarrival_s > 0.0)
        .then(|| Exp::new(1.0 / cfg.mean_interarrival_s))
        .transpose()?;
    let durations = LogNormal::new(cfg.median_duration_s.ln(), cfg.duration_sigma)?;
    let mut submit_ms = 0.0f64;
    let mut jobs = Vec::with_capacity(cfg.jobs);
    for id in 0..cfg.jobs {
        if id > 0 {
            if let Some(gaps) = &gaps {
                submit_ms += (gaps.sample(&mut rng) * 1000.0).round();
            }
        }
        let g = *pick(&mut rng, &cfg.gpu_mix);
        let model = pick(&mut rng, &cfg.model_mix);
        let p = cfg
            .catalogue
            .lookup(model, g)
            .context("profile checked above")?;
        let duration_s = durations
            .sample(&mut rng)
            .clamp(cfg.min_duration_s, cfg.max_duration_s);
        let iterations = ((duration_s * 1000.0 / p.iteration_time).round() as u64).max(1);
        let duration_ms = iterations as f64 * p.iteration_time;
        jobs.push(JobSpec {
            job_id: id as u64,
            num_gpu: g,
            submit_time: submit_ms / 1000.0,
            iterations,
            batch_size: p.batch_size,
            duration: duration_ms.trunc() / 1000.0,
            iteration_time_ms: p.iteration_time,
            resource_time_ms: p.resource_time_ms(),
            model_name: p.model,
            priority: u8::from(rng.random::<f64>() < cfg.opportunistic_share),
        });
    }
    Ok(Trace {
        name: name.to_string(),
        source: format!("generated:{name}"),
        jobs,
        lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn written_traces_read_back_exactly_without_float_noise() {
        let cfg = TraceGenConfig {
            jobs: 800,
            ..TraceGenConfig::default()
        };
        let trace = generate(&cfg, "t").unwrap();
        let mut csv = Vec::new();
        trace.write_csv(&mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        for (line, row) in text.lines().enumerate().skip(1) {
            for field in row.split(',') {
                let decimals = field.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(decimals <= 3, "line {}: {field} in {row}", line + 1);
            }
        }
        let back = Trace::parse(&text, Path::new("t.csv"), "t".into()).unwrap();
        for (a, b) in trace.jobs.iter().zip(&back.jobs) {
            assert_eq!(a.submit_time, b.submit_time, "job {}", a.job_id);
            assert_eq!(a.duration, b.duration, "job {}", a.job_id);
            assert_eq!(a.iterations, b.iterations);
        }
    }

    #[test]
    fn a_gpu_count_without_profiles_names_the_available_ones() {
        let cfg = TraceGenConfig {
            jobs: 5,
            gpu_mix: vec![(3, 1.0)],
            model_mix: vec![("vgg16".into(), 1.0)],
            ..TraceGenConfig::default()
        };
        let err = generate(&cfg, "t").unwrap_err().to_string();
        assert!(err.contains("on 3 GPUs"), "{err}");
        assert!(err.contains("1, 2, 4, 8"), "{err}");
    }
}
