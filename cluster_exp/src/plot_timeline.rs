//! `muri plot --testbed DIR`: a testbed run's utilisation timeline, like Figure 8 of the Muri
//! paper — the utilisation of each resource over time, one panel per policy.
//!
//! DIR is one testbed run folder (`DIR/cluster.csv`) or a folder of them (`run.sh` writes
//! `results/<policy>/cluster.csv`). The series are the measurement columns the testbed appends
//! to `cluster.csv` (see `testbed::measure`): storage (data loading), GPU (compute), network
//! (all-reduce), CPU, and NVML's GPU utilisation where it was measured. Each value holds from
//! its round to the next, so the lines are steps. A column that is never above 0 in a run
//! (empty, or 0 only while nothing ran) is left out of its panel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{column_indices, csv_with_header, data_rows, read_input, InputError};
use crate::plot::{self, Format};

/// The utilisation columns drawn, with their legend names, in drawing order.
const SERIES: [(&str, &str); 5] = [
    ("gpu_util", "GPU (compute stage)"),
    ("storage_util", "storage (data stage)"),
    ("network_util", "network (all-reduce stage)"),
    ("cpu_util", "CPU (trainer processes)"),
    ("nvml_gpu_util", "GPU (NVML)"),
];

const COLOURS: [RGBColor; 5] = [
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

const PANEL_PX: (u32, u32) = (1200, 330);

/// One run's utilisation timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The run folder's name (the policy, for `run.sh` results).
    pub label: String,
    /// Virtual seconds of each row.
    pub time: Vec<f64>,
    /// Per utilisation column drawn (in drawing order): the value of each row (`None` = not
    /// measured in that round).
    pub series: Vec<Vec<Option<f64>>>,
}

/// Reads the utilisation columns of a testbed `cluster.csv`: errors name the file, line and
/// field; a simulator `cluster.csv` (no measurement columns) is refused by name.
pub fn read_timeline(path: &Path, label: &str) -> Result<Timeline, InputError> {
    let text = read_input(path)?;
    let (mut reader, headers) = csv_with_header(&text, path)?;
    let mut columns = vec!["time"];
    columns.extend(SERIES.iter().map(|s| s.0));
    let expected = format!("a testbed cluster.csv with {}", columns.join(","));
    let idx = column_indices(&headers, &columns, &expected, path)?;
    let mut out = Timeline {
        label: label.to_string(),
        time: Vec::new(),
        series: vec![Vec::new(); SERIES.len()],
    };
    for row in data_rows(&mut reader, &headers, path) {
        let (line, record) = row?;
        let value = |k: usize| record.get(idx[k]).unwrap_or("").trim();
        let bad = |k: usize, message: &str| InputError::BadField {
            file: path.to_path_buf(),
            line,
            field: columns[k].to_string(),
            value: value(k).to_string(),
            message: message.to_string(),
        };
        let time: f64 = value(0).parse().map_err(|_| bad(0, "expected a number"))?;
        if !time.is_finite() || time < 0.0 {
            return Err(bad(0, "must be a finite, non-negative time"));
        }
        out.time.push(time);
        for k in 1..columns.len() {
            let v = match value(k) {
                "" => None,
                s => {
                    let v: f64 = s.parse().map_err(|_| bad(k, "expected a number"))?;
                    if !(0.0..=1.0).contains(&v) {
                        return Err(bad(k, "a utilisation must be in [0, 1]"));
                    }
                    Some(v)
                }
            };
            out.series[k - 1].push(v);
        }
    }
    if out.time.is_empty() {
        return Err(InputError::BadRow {
            file: path.to_path_buf(),
            line: 1,
            message: "no rounds logged".into(),
        });
    }
    Ok(out)
}

/// The run folders under `dir`: `dir` itself when it holds a `cluster.csv`, else each
/// sub-folder with one (sorted by name).
pub fn discover(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    if dir.join("cluster.csv").is_file() {
        return Ok(vec![(name(dir), dir.join("cluster.csv"))]);
    }
    let mut runs = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.join("cluster.csv").is_file() {
            runs.push((name(&path), path.join("cluster.csv")));
        }
    }
    runs.sort();
    if runs.is_empty() {
        bail!(
            "{}: no testbed run (a cluster.csv in it or in its sub-folders)",
            dir.display()
        );
    }
    Ok(runs)
}

/// Draws `testbed-timeline.<ext>` in `out` for every run under `dir`; returns the files.
pub fn plot_testbed(dir: &Path, out: &Path, formats: &[Format]) -> anyhow::Result<Vec<PathBuf>> {
    let mut timelines = Vec::new();
    for (label, path) in discover(dir)? {
        timelines.push(read_timeline(&path, &label)?);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    plot::register_font();
    let size = (PANEL_PX.0, PANEL_PX.1 * timelines.len() as u32 + 60);
    let mut written = Vec::new();
    for &format in formats {
        let path = out.join(format!("testbed-timeline.{}", format.ext()));
        let drawn = match format {
            Format::Png => {
                let root = BitMapBackend::new(&path, size).into_drawing_area();
                draw(&root, &timelines).and_then(|()| Ok(root.present()?))
            }
            Format::Svg => {
                let root = SVGBackend::new(&path, size).into_drawing_area();
                draw(&root, &timelines).and_then(|()| Ok(root.present()?))
            }
            Format::Pdf => svg_string(size, &timelines).and_then(|svg| {
                let pdf = plot::svg_to_pdf(&svg)?;
                Ok(std::fs::write(&path, pdf)?)
            }),
        };
        drawn.with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The timeline as SVG text, which [`plot::svg_to_pdf`] turns into PDF.
fn svg_string(size: (u32, u32), timelines: &[Timeline]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, timelines)?;
        root.present()?;
    }
    Ok(svg)
}

fn font(px: u32) -> TextStyle<'static> {
    ("sans-serif", px).into_font().color(&BLACK)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    timelines: &[Timeline],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled("Testbed utilisation per resource", font(28))?;
    let x_max = timelines
        .iter()
        .filter_map(|t| t.time.last())
        .fold(0.0f64, |a, &b| a.max(b / 3600.0))
        .max(1e-3);
    for (panel, timeline) in root
        .split_evenly((timelines.len(), 1))
        .iter()
        .zip(timelines)
    {
        draw_panel(panel, timeline, x_max)?;
    }
    Ok(())
}

/// The step line of one series: each value holds until the next row's time; unmeasured
/// rounds break the line.
fn steps(time: &[f64], values: &[Option<f64>]) -> Vec<Vec<(f64, f64)>> {
    let mut lines = vec![Vec::new()];
    for (k, v) in values.iter().enumerate() {
        let t0 = time[k] / 3600.0;
        let t1 = time.get(k + 1).map_or(t0, |t| t / 3600.0);
        match v {
            Some(v) => {
                let line = lines.last_mut().expect("starts non-empty");
                line.push((t0, v * 100.0));
                line.push((t1, v * 100.0));
            }
            None if lines.last().is_some_and(|l| !l.is_empty()) => lines.push(Vec::new()),
            None => {}
        }
    }
    lines.retain(|l| !l.is_empty());
    lines
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    timeline: &Timeline,
    x_max: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&timeline.label, font(22))
        .margin(8)
        .margin_right(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..105.0)?;
    chart
        .configure_mesh()
        .x_desc("time (hours)")
        .y_desc("utilisation (%)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(font(16))
        .axis_desc_style(font(18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (k, (values, (_, name))) in timeline.series.iter().zip(SERIES).enumerate() {
        // A series never above 0 (NVML without a driver: 0 only while nothing ran) is noise.
        if !values.iter().flatten().any(|&v| v > 0.0) {
            continue;
        }
        let lines = steps(&timeline.time, values);
        let colour = COLOURS[k];
        for (n, line) in lines.into_iter().enumerate() {
            let series = chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
            if n == 0 {
                series.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_each_value_until_the_next_round_and_break_on_gaps() {
        let time = [0.0, 3600.0, 7200.0, 10800.0];
        let values = [Some(0.5), None, Some(0.25), Some(1.0)];
        let lines = steps(&time, &values);
        assert_eq!(
            lines,
            vec![
                vec![(0.0, 50.0), (1.0, 50.0)],
                vec![(2.0, 25.0), (3.0, 25.0), (3.0, 100.0), (3.0, 100.0)],
            ]
        );
    }

    #[test]
    fn a_utilisation_out_of_range_is_refused_by_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.csv");
        let header = "time,gpu_util,storage_util,network_util,cpu_util,nvml_gpu_util";
        std::fs::write(
            &path,
            format!("{header}\n0,0.5,0.1,0,0.01,\n10,1.5,0,0,0,\n"),
        )
        .unwrap();
        let err = read_timeline(&path, "x").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("gpu_util"), "{err}");
        let sim = dir.path().join("sim.csv");
        std::fs::write(&sim, "time,idle_gpu\n0,8\n").unwrap();
        let err = read_timeline(&sim, "x").unwrap_err().to_string();
        assert!(err.contains("gpu_util"), "{err}");
    }
}
