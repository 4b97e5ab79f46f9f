//! Training curves as PNG in the style of the paper's Fig. 6: error (%) per epoch, thin lines for training
//! error, bold lines for test error, one color per run (e.g. plain-20 vs ResNet-20 on one chart).
//! Text uses DejaVu Sans compiled in (plotters' `ab_glyph`), so no system fonts are needed.

use crate::metrics::EpochRow;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One run to draw.
pub struct Curve {
    pub label: String,
    pub rows: Vec<EpochRow>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; a failure here would only lose the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Draws `curves` into a `width` x `height` PNG at `path`.
pub fn draw(path: &Path, title: &str, curves: &[Curve], (width, height): (u32, u32)) -> Result<()> {
    register_fonts();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let epochs = curves.iter().flat_map(|c| c.rows.iter().map(|r| r.epoch)).max().unwrap_or(1).max(1);
    let ymax = curves
        .iter()
        .flat_map(|c| c.rows.iter().flat_map(|r| [r.train_err, r.test_err]))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let ymax = ((ymax * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..epochs as f64, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("error (%)")
        .label_style(("sans-serif", 14))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = |f: fn(&EpochRow) -> f64| -> Vec<(f64, f64)> {
            c.rows.iter().filter(|r| f(r).is_finite()).map(|r| (r.epoch as f64, 100.0 * f(r))).collect()
        };
        chart
            .draw_series(LineSeries::new(points(|r| r.train_err), color.stroke_width(1)))
            .map_err(|e| err(&e))?
            .label(format!("{} train", c.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
        chart
            .draw_series(LineSeries::new(points(|r| r.test_err), color.stroke_width(3)))
            .map_err(|e| err(&e))?
            .label(format!("{} test", c.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
