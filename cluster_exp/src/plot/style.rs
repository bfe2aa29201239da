//! Series styles that survive colour-blindness and greyscale printing: the Okabe–Ito palette
//! for colour, a hatch pattern per bar series and a dash pattern per line series, so that two
//! series never differ by hue alone.

use plotters::coord::Shift;
use plotters::prelude::*;

/// Okabe & Ito's colour-blind-safe palette ("Color Universal Design", 2008), without its
/// black (bars carry black hatching and outlines) and with a mid grey in its place. Ordered so
/// that neighbouring series also differ in lightness.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(240, 228, 66),  // yellow
    RGBColor(153, 153, 153), // grey
];

/// The hatch drawn over a bar (and its legend swatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hatch {
    None,
    /// `/` lines.
    Rising,
    /// `\` lines.
    Falling,
    /// Both diagonals.
    Cross,
    Horizontal,
    Vertical,
    /// Horizontal and vertical lines.
    Grid,
    /// `/` lines twice as dense.
    DenseRising,
}

/// Hatches in series order; the cycle is longer than the palette's (8 × 8 distinct styles).
const HATCHES: [Hatch; 8] = [
    Hatch::None,
    Hatch::Rising,
    Hatch::Falling,
    Hatch::Cross,
    Hatch::Horizontal,
    Hatch::Vertical,
    Hatch::Grid,
    Hatch::DenseRising,
];

/// How a line series is stroked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

const DASHES: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];

/// The look of series `i` of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesStyle {
    pub colour: RGBColor,
    pub hatch: Hatch,
    pub dash: Dash,
}

/// Series `i`'s style: colour, hatch and dash all change with `i`, so any two of the first 8
/// series differ in hatch (bars) and any two neighbours in dash (lines).
pub fn series(i: usize) -> SeriesStyle {
    SeriesStyle {
        colour: PALETTE[i % PALETTE.len()],
        hatch: HATCHES[i % HATCHES.len()],
        dash: DASHES[i % DASHES.len()],
    }
}

/// Pixel distance between hatch lines.
const HATCH_GAP: i32 = 9;

/// The hatch lines of `hatch` clipped to the pixel rectangle `(x0, y0)–(x1, y1)`.
pub fn hatch_segments(
    hatch: Hatch,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
) -> Vec<[(i32, i32); 2]> {
    let (x0, x1) = (x0.min(x1), x0.max(x1));
    let (y0, y1) = (y0.min(y1), y0.max(y1));
    let mut out = Vec::new();
    let rising = |gap: i32, out: &mut Vec<[(i32, i32); 2]>| {
        // Lines x + y = c (pixel y grows downwards, so these rise to the right).
        let mut c = x0 + y0 + gap;
        while c < x1 + y1 {
            let xa = (c - y1).max(x0);
            let xb = (c - y0).min(x1);
            if xa < xb {
                out.push([(xa, c - xa), (xb, c - xb)]);
            }
            c += gap;
        }
    };
    let falling = |out: &mut Vec<[(i32, i32); 2]>| {
        // Lines y - x = d.
        let mut d = y0 - x1 + HATCH_GAP;
        while d < y1 - x0 {
            let xa = (y0 - d).max(x0);
            let xb = (y1 - d).min(x1);
            if xa < xb {
                out.push([(xa, xa + d), (xb, xb + d)]);
            }
            d += HATCH_GAP;
        }
    };
    let horizontal = |out: &mut Vec<[(i32, i32); 2]>| {
        let mut y = y1 - HATCH_GAP;
        while y > y0 {
            out.push([(x0, y), (x1, y)]);
            y -= HATCH_GAP;
        }
    };
    let vertical = |out: &mut Vec<[(i32, i32); 2]>| {
        let mut x = x0 + HATCH_GAP / 2;
        while x < x1 {
            out.push([(x, y0), (x, y1)]);
            x += HATCH_GAP;
        }
    };
    match hatch {
        Hatch::None => {}
        Hatch::Rising => rising(HATCH_GAP, &mut out),
        Hatch::DenseRising => rising(HATCH_GAP / 2, &mut out),
        Hatch::Falling => falling(&mut out),
        Hatch::Cross => {
            rising(HATCH_GAP, &mut out);
            falling(&mut out);
        }
        Hatch::Horizontal => horizontal(&mut out),
        Hatch::Vertical => vertical(&mut out),
        Hatch::Grid => {
            horizontal(&mut out);
            vertical(&mut out);
        }
    }
    out
}

/// A bar in pixel coordinates of `area`: colour fill, hatch, black outline.
pub fn draw_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    style: SeriesStyle,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], style.colour.filled()))?;
    for seg in hatch_segments(style.hatch, (x0, y0), (x1, y1)) {
        area.draw(&PathElement::new(seg.to_vec(), BLACK.stroke_width(1)))?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))?;
    Ok(())
}

/// A line through `points` (data coordinates of `chart`) in `style`'s colour and dash.
pub fn line_series<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    points: Vec<(f64, f64)>,
    style: SeriesStyle,
    width: u32,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    let stroke = style.colour.stroke_width(width);
    match style.dash {
        Dash::Solid => {
            chart.draw_series(LineSeries::new(points, stroke))?;
        }
        Dash::Dashed => {
            chart.draw_series(DashedLineSeries::new(points, 14, 7, stroke))?;
        }
        Dash::Dotted => {
            chart.draw_series(DashedLineSeries::new(points, 3, 5, stroke))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hatch_lines_stay_inside_the_bar() {
        for hatch in HATCHES {
            let segs = hatch_segments(hatch, (10, 100), (40, 20));
            if hatch == Hatch::None {
                assert!(segs.is_empty());
                continue;
            }
            assert!(!segs.is_empty(), "{hatch:?} drew nothing");
            for [(xa, ya), (xb, yb)] in segs {
                for (x, y) in [(xa, ya), (xb, yb)] {
                    assert!(
                        (10..=40).contains(&x) && (20..=100).contains(&y),
                        "{hatch:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn first_eight_series_differ_in_colour_and_hatch() {
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(series(i).colour, series(j).colour);
                assert_ne!(series(i).hatch, series(j).hatch);
            }
        }
    }
}
