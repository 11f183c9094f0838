//! `qlinear bench --plot FILE.svg`: GMAC/s per backend and shape (log scale), one line
//! per backend and mode, with each backend's measured peak as a horizontal line.

use std::path::Path;

use plotters::prelude::*;

use crate::bench::Report;

/// `(label, backend index, dynamic, points)`.
type Series = (String, usize, bool, Vec<(f64, f64)>);

/// Writes the plot of `report` to `path` (SVG).
pub fn write_svg(path: &Path, report: &Report) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for r in &report.results {
        if !shapes.contains(&(r.m, r.k, r.n)) {
            shapes.push((r.m, r.k, r.n));
        }
    }
    if shapes.is_empty() {
        return Err(err(&"no results to plot"));
    }
    let mut backends: Vec<&str> = Vec::new();
    for r in &report.results {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
    }
    let mut series: Vec<Series> = Vec::new();
    for (bi, b) in backends.iter().enumerate() {
        for mode in ["static", "dynamic"] {
            let pts: Vec<(f64, f64)> = report
                .results
                .iter()
                .filter(|r| r.backend == *b && r.mode == mode && r.gmacs > 0.0)
                .map(|r| {
                    let x = shapes
                        .iter()
                        .position(|&s| s == (r.m, r.k, r.n))
                        .unwrap_or(0);
                    (x as f64, r.gmacs)
                })
                .collect();
            if !pts.is_empty() {
                series.push((format!("{b} {mode}"), bi, mode == "dynamic", pts));
            }
        }
    }
    let peaks: Vec<(usize, String, f64)> = backends
        .iter()
        .enumerate()
        .filter_map(|(bi, b)| {
            report
                .probes
                .peak
                .get(*b)
                .map(|p| (bi, format!("{b} peak ({})", p.instruction), p.gmacs))
        })
        .collect();
    let values = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .chain(peaks.iter().map(|p| p.2));
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y0, y1) = (lo * 0.5, hi * 2.0);
    let xmax = shapes.len() as f64 - 0.5;

    // About 110 px per shape label, so the suites' 15-16 shapes stay legible.
    let width = (150 + 110 * shapes.len() as u32).max(1000);
    let root = SVGBackend::new(path, (width, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "qlinear bench: GMAC/s, {} thread(s), {}",
        report.threads, report.cpu
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..xmax, (y0..y1).log_scale())
        .map_err(|e| err(&e))?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < shapes.len() {
            let (m, k, n) = shapes[i as usize];
            format!("{m}x{k}x{n}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(shapes.len() + 1)
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 11))
        .x_desc("M x K x N")
        .y_desc("GMAC/s (log)")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, bi, dynamic, pts) in &series {
        let color = Palette99::pick(*bi).to_rgba();
        let width = if *dynamic { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
            });
        chart
            .draw_series(pts.iter().map(|&p| {
                if *dynamic {
                    Circle::new(p, 4, color.stroke_width(1))
                } else {
                    Circle::new(p, 4, color.filled())
                }
            }))
            .map_err(|e| err(&e))?;
    }
    for (bi, name, g) in &peaks {
        let color = Palette99::pick(*bi).to_rgba();
        chart
            .draw_series(DashedLineSeries::new(
                [(-0.5, *g), (xmax, *g)],
                8,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{name}: {g:.0}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
