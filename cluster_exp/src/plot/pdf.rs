//! PDF output: plotters has no PDF backend, so a figure is drawn as SVG and converted with
//! svg2pdf (vector paths, text kept as text in an embedded subset of the project's font).

use std::sync::Arc;

use anyhow::{anyhow, Context};
use svg2pdf::usvg;

use super::FONT;

/// The family name inside `assets/fonts/DejaVuSans.ttf`.
const FONT_FAMILY: &str = "DejaVu Sans";

/// Converts plotters' SVG (whose text asks for `sans-serif`) into a one-page PDF whose text is
/// set in the embedded DejaVu Sans, whatever fonts the machine has.
pub fn svg_to_pdf(svg: &str) -> anyhow::Result<Vec<u8>> {
    let mut fonts = usvg::fontdb::Database::new();
    fonts.load_font_data(FONT.to_vec());
    fonts.set_sans_serif_family(FONT_FAMILY);
    let options = usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        fontdb: Arc::new(fonts),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).context("reading the figure's SVG")?;
    svg2pdf::to_pdf(
        &tree,
        svg2pdf::ConversionOptions::default(),
        svg2pdf::PageOptions::default(),
    )
    .map_err(|e| anyhow!("converting the figure to PDF: {e}"))
}
