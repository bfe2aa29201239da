//! Facts about the eight models of the Muri paper: profiled stage times and the
//! restart overhead the reference charges per scheduling interval.

use crate::error::{column_indices, csv_with_header, data_rows, read_input, InputError};

/// GPU counts the profile tables cover.
pub const GPU_SIZES: [u32; 6] = [1, 2, 4, 8, 16, 32];

/// The paper's models, in the reference's table order.
pub const MODELS: [&str; 8] = [
    "vgg16",
    "vgg19",
    "resnet18",
    "shufflenet_v2_x1_0",
    "bert",
    "gpt2",
    "a2c",
    "dqn",
];

/// Restart overhead in seconds per (GPU count, model), indexed like [`GPU_SIZES`] × [`MODELS`].
const OVERHEAD_S: [[f64; 8]; 6] = [
    [7.0, 7.0, 4.0, 4.0, 10.0, 10.0, 38.0, 5.0],
    [7.0, 7.0, 5.0, 4.0, 10.0, 10.0, 39.0, 5.0],
    [8.0, 8.0, 5.0, 5.0, 10.0, 10.0, 39.0, 6.0],
    [9.0, 9.0, 7.0, 5.0, 10.0, 10.0, 46.0, 6.0],
    [9.0, 10.0, 7.0, 7.0, 10.0, 10.0, 46.0, 8.0],
    [10.0, 10.0, 7.0, 8.0, 10.0, 10.0, 46.0, 8.0],
];

/// Overhead charged for an unknown model (the reference's default).
pub const DEFAULT_OVERHEAD_S: f64 = 10.0;

/// Seconds of progress a job of `model` on `num_gpu` GPUs loses per scheduling interval.
///
/// The reference only knows GPU counts 1–32 in powers of two (others raise a
/// KeyError there); we use the row of the largest listed count not above `num_gpu`.
pub fn restart_overhead(num_gpu: u32, model: &str) -> f64 {
    let row = GPU_SIZES.iter().rposition(|&g| g <= num_gpu).unwrap_or(0);
    match MODELS.iter().position(|&m| m == model) {
        Some(col) => OVERHEAD_S[row][col],
        None => DEFAULT_OVERHEAD_S,
    }
}

/// One profiled (model, GPU count) configuration, in the trace's millisecond units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub model: &'static str,
    pub num_gpu: u32,
    pub batch_size: u32,
    pub iteration_time_ms: f64,
    /// Data loading, GPU compute, gradient communication.
    pub resource_time_ms: [f64; 3],
}

const fn p(model: &'static str, num_gpu: u32, batch_size: u32, it: f64, rt: [f64; 3]) -> Profile {
    Profile {
        model,
        num_gpu,
        batch_size,
        iteration_time_ms: it,
        resource_time_ms: rt,
    }
}

/// The stage-time catalogue used by `muri trace gen`: the values the paper's traces use
/// for every model and GPU count (read off `trace1`–`trace4`).
pub const CATALOGUE: [Profile; 48] = [
    p("vgg16", 1, 16, 107.0, [117.0, 68.0, 0.0]),
    p("vgg16", 2, 16, 191.0, [114.0, 72.0, 40.0]),
    p("vgg16", 4, 16, 201.0, [82.0, 72.0, 67.0]),
    p("vgg16", 8, 16, 214.0, [82.0, 75.0, 66.0]),
    p("vgg16", 16, 16, 332.0, [83.0, 68.0, 110.0]),
    p("vgg16", 32, 16, 336.0, [87.0, 67.0, 131.0]),
    p("vgg19", 1, 16, 109.0, [114.0, 80.0, 0.0]),
    p("vgg19", 2, 16, 205.0, [115.0, 83.0, 41.0]),
    p("vgg19", 4, 16, 212.0, [84.0, 85.0, 73.0]),
    p("vgg19", 8, 16, 226.0, [82.0, 88.0, 60.0]),
    p("vgg19", 16, 16, 302.0, [102.0, 78.0, 123.0]),
    p("vgg19", 32, 16, 356.0, [89.0, 79.0, 141.0]),
    p("resnet18", 1, 128, 779.0, [711.0, 110.0, 0.0]),
    p("resnet18", 2, 128, 881.0, [687.0, 110.0, 95.0]),
    p("resnet18", 4, 128, 921.0, [723.0, 113.0, 73.0]),
    p("resnet18", 8, 128, 1010.0, [784.0, 117.0, 77.0]),
    p("resnet18", 16, 128, 1055.0, [736.0, 108.0, 93.0]),
    p("resnet18", 32, 128, 1059.0, [712.0, 111.0, 93.0]),
    p("shufflenet_v2_x1_0", 1, 128, 798.0, [706.0, 59.0, 0.0]),
    p("shufflenet_v2_x1_0", 2, 128, 850.0, [747.0, 58.0, 18.0]),
    p("shufflenet_v2_x1_0", 4, 128, 886.0, [703.0, 62.0, 17.0]),
    p("shufflenet_v2_x1_0", 8, 128, 957.0, [769.0, 57.0, 10.0]),
    p("shufflenet_v2_x1_0", 16, 128, 1006.0, [776.0, 57.0, 21.0]),
    p("shufflenet_v2_x1_0", 32, 128, 1019.0, [799.0, 56.0, 24.0]),
    p("bert", 1, 4, 178.0, [0.5, 160.0, 0.0]),
    p("bert", 2, 4, 195.0, [0.5, 163.0, 18.0]),
    p("bert", 4, 4, 190.0, [0.5, 163.0, 18.0]),
    p("bert", 8, 4, 192.0, [0.5, 167.0, 59.0]),
    p("bert", 16, 4, 244.0, [0.5, 166.0, 86.0]),
    p("bert", 32, 4, 260.0, [0.5, 166.0, 133.0]),
    p("gpt2", 1, 4, 426.0, [0.6, 410.0, 0.0]),
    p("gpt2", 2, 4, 464.0, [0.7, 416.0, 40.0]),
    p("gpt2", 4, 4, 433.0, [0.6, 413.0, 20.0]),
    p("gpt2", 8, 4, 437.0, [0.6, 419.0, 49.0]),
    p("gpt2", 16, 4, 491.0, [0.6, 415.0, 137.0]),
    p("gpt2", 32, 4, 514.0, [0.7, 414.0, 216.0]),
    p("a2c", 1, 64, 517.0, [514.0, 14.0, 0.0]),
    p("a2c", 2, 64, 525.0, [504.0, 14.0, 0.5]),
    p("a2c", 4, 64, 533.0, [502.0, 10.0, 0.3]),
    p("a2c", 8, 64, 555.0, [502.0, 14.0, 0.4]),
    p("a2c", 16, 64, 567.0, [514.0, 14.0, 1.2]),
    p("a2c", 32, 64, 585.0, [507.0, 14.0, 2.0]),
    p("dqn", 1, 128, 490.0, [446.0, 8.0, 0.0]),
    p("dqn", 2, 128, 495.0, [441.0, 8.0, 0.6]),
    p("dqn", 4, 128, 505.0, [440.0, 8.0, 0.4]),
    p("dqn", 8, 128, 509.0, [435.0, 8.0, 0.5]),
    p("dqn", 16, 128, 525.0, [438.0, 8.0, 1.2]),
    p("dqn", 32, 128, 546.0, [437.0, 8.0, 1.6]),
];

/// Looks up the catalogue entry for a model on a GPU count.
pub fn profile(model: &str, num_gpu: u32) -> Option<&'static Profile> {
    CATALOGUE
        .iter()
        .find(|p| p.model == model && p.num_gpu == num_gpu)
}

/// The built-in catalogue plus profiles measured on this cluster (`muri profile --append`),
/// which `muri trace gen --catalogue FILE` draws from. File entries override built-in ones
/// for the same model and GPU count.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    extra: Vec<MeasuredProfile>,
}

/// A profile read from a catalogue file (owned strings, unlike [`Profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredProfile {
    pub model: String,
    pub num_gpu: u32,
    pub batch_size: u32,
    pub iteration_time: f64,
    pub resource_time_0: f64,
    pub resource_time_1: f64,
    pub resource_time_2: f64,
}

impl MeasuredProfile {
    pub fn resource_time_ms(&self) -> [f64; 3] {
        [
            self.resource_time_0,
            self.resource_time_1,
            self.resource_time_2,
        ]
    }
}

impl From<&Profile> for MeasuredProfile {
    fn from(p: &Profile) -> Self {
        MeasuredProfile {
            model: p.model.to_string(),
            num_gpu: p.num_gpu,
            batch_size: p.batch_size,
            iteration_time: p.iteration_time_ms,
            resource_time_0: p.resource_time_ms[0],
            resource_time_1: p.resource_time_ms[1],
            resource_time_2: p.resource_time_ms[2],
        }
    }
}

/// Column names of a catalogue file (the trace's names for the same quantities).
pub const CATALOGUE_HEADER: &str =
    "model,num_gpu,batch_size,iteration_time,resource_time_0,resource_time_1,resource_time_2";

impl Catalogue {
    /// The built-in catalogue plus the profiles in `path` (errors name file, line and field).
    pub fn with_file(path: &std::path::Path) -> Result<Catalogue, InputError> {
        let text = read_input(path)?;
        let (mut reader, headers) = csv_with_header(&text, path)?;
        let columns: Vec<&str> = CATALOGUE_HEADER.split(',').collect();
        let idx = column_indices(&headers, &columns, CATALOGUE_HEADER, path)?;
        let mut extra = Vec::new();
        for row in data_rows(&mut reader, &headers, path) {
            let (line, record) = row?;
            let field = |k: usize| record.get(idx[k]).unwrap_or("");
            let bad = |k: usize, message: &str| InputError::BadField {
                file: path.to_path_buf(),
                line,
                field: columns[k].into(),
                value: field(k).into(),
                message: message.into(),
            };
            let count = |k: usize| -> Result<u32, InputError> {
                field(k)
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(k, "expected a positive integer"))
            };
            let ms = |k: usize| -> Result<f64, InputError> {
                field(k)
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t >= 0.0)
                    .ok_or_else(|| bad(k, "expected milliseconds ≥ 0"))
            };
            if field(0).is_empty() {
                return Err(bad(0, "model name is empty"));
            }
            extra.push(MeasuredProfile {
                model: field(0).to_string(),
                num_gpu: count(1)?,
                batch_size: count(2)?,
                iteration_time: ms(3)?,
                resource_time_0: ms(4)?,
                resource_time_1: ms(5)?,
                resource_time_2: ms(6)?,
            });
        }
        Ok(Catalogue { extra })
    }

    /// The profile of `model` on `num_gpu` GPUs: a file entry if there is one, else built-in.
    pub fn lookup(&self, model: &str, num_gpu: u32) -> Option<MeasuredProfile> {
        self.extra
            .iter()
            .rev()
            .find(|p| p.model == model && p.num_gpu == num_gpu)
            .cloned()
            .or_else(|| profile(model, num_gpu).map(MeasuredProfile::from))
    }

    /// The GPU counts `model` has a profile for, ascending.
    pub fn gpu_sizes(&self, model: &str) -> Vec<u32> {
        let mut sizes: Vec<u32> = CATALOGUE
            .iter()
            .filter(|p| p.model == model)
            .map(|p| p.num_gpu)
            .chain(
                self.extra
                    .iter()
                    .filter(|p| p.model == model)
                    .map(|p| p.num_gpu),
            )
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// Every model name known, built-in first.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
        for p in &self.extra {
            if !out.contains(&p.model) {
                out.push(p.model.clone());
            }
        }
        out
    }
}

/// Appends `p` to the catalogue file at `path`, writing the header first if the file is new.
pub fn append_to_catalogue(path: &std::path::Path, p: &MeasuredProfile) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let new = !path.exists() || std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(f, "{CATALOGUE_HEADER}")?;
    }
    writeln!(
        f,
        "{},{},{},{},{},{},{}",
        p.model,
        p.num_gpu,
        p.batch_size,
        p.iteration_time,
        p.resource_time_0,
        p.resource_time_1,
        p.resource_time_2
    )
    .with_context(|| format!("appending to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_table_lookups() {
        assert_eq!(restart_overhead(1, "dqn"), 5.0);
        assert_eq!(restart_overhead(8, "a2c"), 46.0);
        assert_eq!(restart_overhead(16, "vgg19"), 10.0);
        assert_eq!(restart_overhead(4, "unknown"), DEFAULT_OVERHEAD_S);
        // 3 GPUs is not in the table: the 2-GPU row applies.
        assert_eq!(restart_overhead(3, "resnet18"), 5.0);
    }

    #[test]
    fn catalogue_is_complete() {
        for m in MODELS {
            for g in GPU_SIZES {
                assert!(profile(m, g).is_some(), "{m} on {g} GPUs");
            }
        }
    }

    #[test]
    fn catalogue_file_adds_and_overrides_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cat.csv");
        let mine = MeasuredProfile {
            model: "tinycnn".into(),
            num_gpu: 1,
            batch_size: 32,
            iteration_time: 41.5,
            resource_time_0: 20.0,
            resource_time_1: 18.0,
            resource_time_2: 3.5,
        };
        append_to_catalogue(&path, &mine).unwrap();
        let faster_vgg = MeasuredProfile {
            model: "vgg16".into(),
            iteration_time: 50.0,
            ..mine.clone()
        };
        append_to_catalogue(&path, &faster_vgg).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some(CATALOGUE_HEADER));
        assert_eq!(text.lines().count(), 3, "one header, two rows");

        let cat = Catalogue::with_file(&path).unwrap();
        assert_eq!(cat.lookup("tinycnn", 1), Some(mine));
        assert_eq!(cat.lookup("vgg16", 1).unwrap().iteration_time, 50.0);
        assert_eq!(cat.lookup("vgg16", 2).unwrap().iteration_time, 191.0);
        assert!(cat.lookup("tinycnn", 2).is_none());
        assert!(cat.models().contains(&"tinycnn".to_string()));
    }

    #[test]
    fn bad_catalogue_row_names_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(
            &path,
            format!("{CATALOGUE_HEADER}\nok,1,8,10,1,2,3\nbad,1,8,10,1,-2,3\n"),
        )
        .unwrap();
        let err = Catalogue::with_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("resource_time_1"),
            "{err}"
        );
        // A blank line and CRLF endings do not shift the line numbers; a short row is refused.
        std::fs::write(
            &path,
            format!("{CATALOGUE_HEADER}\r\n\r\nok,1,8,10,1,2,3\r\nshort,1,8\r\n"),
        )
        .unwrap();
        let err = Catalogue::with_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("3 fields"), "{err}");
        std::fs::write(&path, "model,num_gpu\nx,1\n").unwrap();
        let err = Catalogue::with_file(&path).unwrap_err().to_string();
        assert!(err.contains("missing column `batch_size`"), "{err}");
    }
}
