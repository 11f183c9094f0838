//! `qlinear bench --plot FILE.svg` and `qlinear plot --json IN --out OUT.svg`: grouped
//! bars of GMAC/s per shape, one bar per backend, one panel per mode (static above
//! dynamic), on a shared log scale.
//!
//! The figure, top to bottom: a title (CPU, threads, suite), a legend strip (a colour
//! per backend, the peak-line key, the inexact key), then the panels. In each panel the
//! shapes are categories along x (`M×K×N` under each group, light separators between
//! groups), each backend's measured peak is a dashed line in its colour, labelled with
//! its value in GMAC/s in a margin reserved right of the plot, and a result whose output
//! differs from the reference has a red outline and a red `✗` above its bar.
//!
//! Every position comes from [`Layout`], computed from the counts of shapes, backends
//! and modes and the legend's texts, not from the values: the legend and the peak
//! labels live in their own rectangles, apart from the plotting areas, so they cannot
//! cover a bar whatever the data. The output is a function of the report only (no
//! clock, no font files: the SVG backend writes text elements, and the layout estimates
//! text widths itself).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::Report;

/// Red of the inexact marks (no backend gets it).
const INEXACT: RGBColor = RGBColor(214, 39, 40);
/// Grey of the reference backend.
const REFERENCE: RGBColor = RGBColor(127, 127, 127);
/// Colours of the other backends, in order of first appearance in the report.
const PALETTE: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];

/// Font sizes as plotters takes them (the SVG gets `size / 1.24` px).
const TITLE_SIZE: f64 = 22.0;
const TEXT_SIZE: f64 = 15.0;
const SMALL_SIZE: f64 = 14.0;
const VALUE_SIZE: f64 = 12.0;

/// Fixed parts of the layout, in pixels.
const MARGIN: i32 = 12;
const TITLE_H: i32 = 36;
const LEGEND_ROW_H: i32 = 24;
const LEGEND_PAD: i32 = 8;
const SWATCH_W: i32 = 26;
const PANEL_H: i32 = 330;
const PANEL_CAPTION_H: i32 = 26;
const Y_LABEL_W: i32 = 78;
const X_LABEL_H: i32 = 46;
const PEAK_LABEL_W: i32 = 230;
const MIN_GROUP_W: i32 = 130;
const BAR_W: i32 = 22;
const MIN_WIDTH: i32 = 960;

/// The most shapes and backends one plot takes: the layout's widths (in i32 pixels)
/// grow with their product.
const MAX_SHAPES: usize = 1000;
const MAX_BACKENDS: usize = 100;
/// The widest a text is estimated (pixels).
const MAX_TEXT_W: i32 = 1 << 20;

/// The GMAC/s range the y axis can show (see [`PlotData::y_range`]): a millionth of a
/// MAC per second to a million TMAC/s, far beyond any measurement.
const Y_MIN: f64 = 1e-15;
const Y_MAX: f64 = 1e9;

/// One bar: a result of the report.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    backend: usize,
    mode: &'static str,
    shape: usize,
    gmacs: f64,
    exact: bool,
}

/// One backend's measured peak.
#[derive(Debug, Clone, PartialEq)]
struct Peak {
    backend: usize,
    gmacs: f64,
}

/// What the plot shows: the part of a [`Report`] it needs, in plotting order.
#[derive(Debug, Clone, PartialEq)]
struct PlotData {
    title: String,
    /// `(m, k, n)`, in order of first appearance.
    shapes: Vec<(usize, usize, usize)>,
    /// Backend names, in order of first appearance.
    backends: Vec<String>,
    /// `static` and/or `dynamic`, in that order.
    modes: Vec<&'static str>,
    bars: Vec<Bar>,
    peaks: Vec<Peak>,
}

/// One row of the report, whether from a [`Report`] or from its JSON.
struct Row<'a> {
    backend: &'a str,
    mode: &'a str,
    mkn: (usize, usize, usize),
    gmacs: f64,
    exact: bool,
}

fn mode_name(mode: &str) -> Result<&'static str, String> {
    match mode {
        "static" => Ok("static"),
        "dynamic" => Ok("dynamic"),
        other => Err(format!("unknown mode {other:?}")),
    }
}

fn title(cpu: &str, threads: usize, suite: &str, quick: bool) -> String {
    let threads = if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    };
    let quick = if quick { ", --quick" } else { "" };
    format!("qlinear bench: {cpu}, {threads}, suite {suite}{quick}")
}

impl PlotData {
    fn new<'a>(
        title: String,
        rows: impl IntoIterator<Item = Row<'a>>,
        peaks: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Self, String> {
        let mut data = PlotData {
            title,
            shapes: Vec::new(),
            backends: Vec::new(),
            modes: Vec::new(),
            bars: Vec::new(),
            peaks: Vec::new(),
        };
        let mut rows_modes = Vec::new();
        for r in rows {
            let mode = mode_name(r.mode)?;
            let shape = index_of(&mut data.shapes, r.mkn, |s| *s == r.mkn);
            let backend = index_of(&mut data.backends, r.backend.to_string(), |b| {
                b == r.backend
            });
            if !rows_modes.contains(&mode) {
                rows_modes.push(mode);
            }
            data.bars.push(Bar {
                backend,
                mode,
                shape,
                gmacs: r.gmacs,
                exact: r.exact,
            });
        }
        if data.bars.is_empty() {
            return Err("no results to plot".into());
        }
        // The layout is in i32 pixels, its width proportional to shapes x backends.
        if data.shapes.len() > MAX_SHAPES || data.backends.len() > MAX_BACKENDS {
            return Err(format!(
                "too many results to plot: {} shapes and {} backends (at most {MAX_SHAPES} \
                 shapes and {MAX_BACKENDS} backends)",
                data.shapes.len(),
                data.backends.len()
            ));
        }
        // Panels in a fixed order, static first.
        data.modes = ["static", "dynamic"]
            .into_iter()
            .filter(|m| rows_modes.contains(m))
            .collect();
        for (name, gmacs) in peaks {
            if let Some(backend) = data.backends.iter().position(|b| b == name) {
                if gmacs.is_finite() && gmacs > 0.0 {
                    data.peaks.push(Peak { backend, gmacs });
                }
            }
        }
        data.peaks.sort_by_key(|p| p.backend);
        Ok(data)
    }

    fn from_report(report: &Report) -> Result<Self, String> {
        let rows = report.results.iter().map(|r| Row {
            backend: &r.backend,
            mode: r.mode,
            mkn: (r.m, r.k, r.n),
            gmacs: r.gmacs,
            exact: r.exact,
        });
        let peaks = report
            .probes
            .peak
            .iter()
            .map(|(b, p)| (b.as_str(), p.gmacs));
        PlotData::new(
            title(&report.cpu, report.threads, &report.suite, report.quick),
            rows,
            peaks,
        )
    }

    /// The same from the JSON of `bench --json` (the fields the plot uses).
    fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let str_of = |v: &serde_json::Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("missing string field {key:?}"))
        };
        let usize_of = |v: &serde_json::Value, key: &str| -> Result<usize, String> {
            v.get(key)
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| format!("missing integer field {key:?}"))
        };
        let cpu = str_of(v, "cpu")?;
        let suite = str_of(v, "suite")?;
        let threads = usize_of(v, "threads")?;
        let quick = v.get("quick").and_then(|q| q.as_bool()).unwrap_or(false);
        let results = v
            .get("results")
            .and_then(|r| r.as_array())
            .ok_or("missing array \"results\"")?;
        let mut owned = Vec::with_capacity(results.len());
        for (i, r) in results.iter().enumerate() {
            let at = |e: String| format!("results[{i}]: {e}");
            owned.push((
                str_of(r, "backend").map_err(at)?,
                str_of(r, "mode").map_err(at)?,
                (
                    usize_of(r, "m").map_err(at)?,
                    usize_of(r, "k").map_err(at)?,
                    usize_of(r, "n").map_err(at)?,
                ),
                r.get("gmacs")
                    .and_then(|g| g.as_f64())
                    .ok_or_else(|| at("missing number field \"gmacs\"".into()))?,
                r.get("exact")
                    .and_then(|e| e.as_bool())
                    .ok_or_else(|| at("missing boolean field \"exact\"".into()))?,
            ));
        }
        let rows = owned.iter().map(|(backend, mode, mkn, gmacs, exact)| Row {
            backend,
            mode,
            mkn: *mkn,
            gmacs: *gmacs,
            exact: *exact,
        });
        let mut peaks = Vec::new();
        if let Some(map) = v
            .get("probes")
            .and_then(|p| p.get("peak"))
            .and_then(|p| p.as_object())
        {
            for (name, p) in map {
                if let Some(g) = p.get("gmacs").and_then(|g| g.as_f64()) {
                    peaks.push((name.as_str(), g));
                }
            }
        }
        PlotData::new(title(&cpu, threads, &suite, quick), rows, peaks)
    }

    fn color(&self, backend: usize) -> RGBColor {
        if self.backends[backend] == "reference" {
            return REFERENCE;
        }
        let others = self.backends[..backend]
            .iter()
            .filter(|b| *b != "reference")
            .count();
        PALETTE[others % PALETTE.len()]
    }

    fn inexact_count(&self) -> usize {
        self.bars.iter().filter(|b| !b.exact).count()
    }

    /// Legend entries, left to right.
    fn legend(&self) -> Vec<(LegendKey, String)> {
        let mut items: Vec<(LegendKey, String)> = (0..self.backends.len())
            .map(|b| (LegendKey::Backend(b), self.backends[b].clone()))
            .collect();
        if !self.peaks.is_empty() {
            items.push((
                LegendKey::Peak,
                "measured peak of the backend's instruction mix (GMAC/s)".into(),
            ));
        }
        let bad = self.inexact_count();
        let text = if bad == 0 {
            format!(
                "inexact: none (all {} outputs equal the reference)",
                self.bars.len()
            )
        } else {
            format!(
                "✗ inexact: output differs from the reference ({bad} of {})",
                self.bars.len()
            )
        };
        items.push((LegendKey::Inexact, text));
        items
    }

    /// Log-scale y range: from a whole decade below the lowest value to 3x the highest.
    ///
    /// Values are first clamped to `[Y_MIN, Y_MAX]`: plotters' log axis loops over the
    /// decades of `end / start` (as a `usize`) and never ends for an infinite end, a zero
    /// start or a ratio that overflows f64, which a report holding e.g. `1e308` or
    /// `5e-324` GMAC/s would give. Bars outside are drawn at the clamped height.
    fn y_range(&self) -> (f64, f64) {
        let values = self
            .bars
            .iter()
            .map(|b| b.gmacs)
            .chain(self.peaks.iter().map(|p| p.gmacs))
            .filter(|g| g.is_finite() && *g > 0.0)
            .map(|g| g.clamp(Y_MIN, Y_MAX));
        let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            return (0.1, 10.0);
        }
        let y0 = 10f64.powf((lo * 0.8).log10().floor());
        // Room above the top bar for its value and a marker.
        let y1 = hi * 3.0;
        (y0, y1)
    }
}

fn index_of<T>(v: &mut Vec<T>, item: T, is: impl Fn(&T) -> bool) -> usize {
    match v.iter().position(is) {
        Some(i) => i,
        None => {
            v.push(item);
            v.len() - 1
        }
    }
}

/// What a legend entry's swatch shows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LegendKey {
    Backend(usize),
    Peak,
    Inexact,
}

/// A pixel rectangle, `x0..x1` by `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Rect {
    #[cfg(test)]
    fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
    #[cfg(test)]
    fn contains(&self, o: &Rect) -> bool {
        self.x0 <= o.x0 && o.x1 <= self.x1 && self.y0 <= o.y0 && o.y1 <= self.y1
    }
}

/// Estimated width of `text` at plotters size `size` (SVG px = size / 1.24; a
/// sans-serif character is at most about 0.62 em wide on average).
///
/// Capped at [`MAX_TEXT_W`], so that sums of widths and positions stay far from
/// `i32::MAX` however long a name in the report is.
fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * 0.62 * size / 1.24)
        .ceil()
        .min(f64::from(MAX_TEXT_W)) as i32
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    width: u32,
    height: u32,
    /// The legend strip, and the top-left corner of each entry's swatch.
    legend: Rect,
    legend_items: Vec<(i32, i32)>,
    /// Per mode: the whole panel, and inside it the plotting area (axes excluded).
    panels: Vec<Rect>,
    plots: Vec<Rect>,
    /// Per mode: the margin right of the plotting area where the peak labels go.
    peak_labels: Vec<Rect>,
}

impl Layout {
    fn new(data: &PlotData) -> Layout {
        let groups = data.shapes.len().max(1) as i32;
        let group_w = MIN_GROUP_W.max(BAR_W * data.backends.len() as i32 + 40);
        let fixed = MARGIN + Y_LABEL_W + PEAK_LABEL_W + MARGIN;
        let plot_w = (groups * group_w).max(MIN_WIDTH - fixed);
        let width = fixed + plot_w;

        // Legend entries flow left to right and wrap.
        let legend_top = MARGIN + TITLE_H;
        let (left, right) = (MARGIN + Y_LABEL_W, width - MARGIN);
        let mut legend_items = Vec::new();
        let (mut x, mut row) = (left, 0);
        for (_, text) in data.legend() {
            let w = SWATCH_W + 8 + text_width(&text, TEXT_SIZE) + 24;
            if x + w > right && x > left {
                x = left;
                row += 1;
            }
            legend_items.push((x, legend_top + LEGEND_PAD + row * LEGEND_ROW_H));
            x += w;
        }
        let legend = Rect {
            x0: MARGIN,
            y0: legend_top,
            x1: width - MARGIN,
            y1: legend_top + 2 * LEGEND_PAD + (row + 1) * LEGEND_ROW_H,
        };

        let mut panels = Vec::new();
        let mut plots = Vec::new();
        let mut peak_labels = Vec::new();
        let mut y = legend.y1 + 6;
        for _ in &data.modes {
            let panel = Rect {
                x0: MARGIN,
                y0: y,
                x1: width - MARGIN,
                y1: y + PANEL_H,
            };
            let plot = Rect {
                x0: panel.x0 + Y_LABEL_W,
                y0: panel.y0 + PANEL_CAPTION_H,
                x1: panel.x0 + Y_LABEL_W + plot_w,
                y1: panel.y1 - X_LABEL_H,
            };
            peak_labels.push(Rect {
                x0: plot.x1,
                y0: plot.y0,
                x1: panel.x1,
                y1: plot.y1,
            });
            panels.push(panel);
            plots.push(plot);
            y = panel.y1 + 6;
        }
        Layout {
            width: width as u32,
            height: (y + MARGIN) as u32,
            legend,
            legend_items,
            panels,
            plots,
            peak_labels,
        }
    }
}

fn text_style(size: f64, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&color)
        .pos(Pos::new(h, v))
}

/// An axis tick: `1000`, `10`, `0.25` (no trailing zeros, at most 3 decimals), `1e-5`
/// below 0.001 (three decimals would print 0).
fn tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else if v < 0.000_5 {
        format!("{v:e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A thick red frame from `(x0, y0)` to `(x1, y1)` (the SVG backend draws rectangle
/// outlines 1 px wide whatever the style, polylines as wide as asked).
fn outline(a: (i32, i32), b: (i32, i32)) -> PathElement<(i32, i32)> {
    PathElement::new(
        vec![
            (a.0, a.1),
            (b.0, a.1),
            (b.0, b.1),
            (a.0, b.1),
            (a.0, a.1),
            (b.0, a.1),
        ],
        INEXACT.stroke_width(3),
    )
}

/// A bar's value label: `554`, `12`, `1.3`, `6.0e-6` below 0.05 (one decimal would
/// print 0.0).
fn value(g: f64) -> String {
    if g >= 9.95 {
        format!("{g:.0}")
    } else if g > 0.0 && g < 0.05 {
        format!("{g:.1e}")
    } else {
        format!("{g:.1}")
    }
}

/// Spreads label centres `ys` (sorted ascending) at least `gap` apart, within `lo..=hi`.
fn spread(ys: &mut [i32], gap: i32, lo: i32, hi: i32) {
    for i in 0..ys.len() {
        let min = if i == 0 { lo } else { ys[i - 1] + gap };
        ys[i] = ys[i].max(min);
    }
    for i in (0..ys.len()).rev() {
        let max = if i + 1 == ys.len() {
            hi
        } else {
            ys[i + 1] - gap
        };
        ys[i] = ys[i].min(max);
    }
}

/// Draws `data` on `root` (sized `layout.width x layout.height`). Returns the plotting
/// areas as plotters computed them, for the tests to hold against the layout.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &PlotData,
    layout: &Layout,
) -> Result<Vec<Rect>, String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    root.draw(&Text::new(
        data.title.clone(),
        (layout.width as i32 / 2, MARGIN + TITLE_H / 2),
        text_style(TITLE_SIZE, BLACK, HPos::Center, VPos::Center),
    ))
    .map_err(e)?;

    // Legend strip.
    let l = layout.legend;
    root.draw(&Rectangle::new(
        [(l.x0, l.y0), (l.x1, l.y1)],
        BLACK.mix(0.25).stroke_width(1),
    ))
    .map_err(e)?;
    for ((key, text), &(x, y)) in data.legend().iter().zip(&layout.legend_items) {
        let mid = y + LEGEND_ROW_H / 2;
        match *key {
            LegendKey::Backend(b) => {
                root.draw(&Rectangle::new(
                    [(x, mid - 7), (x + SWATCH_W, mid + 7)],
                    data.color(b).filled(),
                ))
                .map_err(e)?;
            }
            LegendKey::Peak => {
                for d in (0..SWATCH_W).step_by(9) {
                    root.draw(&PathElement::new(
                        [(x + d, mid), (x + (d + 6).min(SWATCH_W), mid)],
                        BLACK.stroke_width(2),
                    ))
                    .map_err(e)?;
                }
            }
            LegendKey::Inexact => {
                root.draw(&Rectangle::new(
                    [(x + 6, mid - 5), (x + SWATCH_W - 6, mid + 9)],
                    REFERENCE.mix(0.35).filled(),
                ))
                .map_err(e)?;
                root.draw(&outline((x + 6, mid - 5), (x + SWATCH_W - 6, mid + 9)))
                    .map_err(e)?;
            }
        }
        root.draw(&Text::new(
            text.clone(),
            (x + SWATCH_W + 8, mid),
            text_style(TEXT_SIZE, BLACK, HPos::Left, VPos::Center),
        ))
        .map_err(e)?;
    }

    let (y0, y1) = data.y_range();
    let groups = data.shapes.len();
    let xmax = groups as f64 - 0.5;
    // Bars at most BAR_W + 6 px apart, centred on their shape.
    let px_per_x = (layout.plots[0].x1 - layout.plots[0].x0) as f64 / groups.max(1) as f64;
    let nb = data.backends.len() as f64;
    let slot = (0.8 / nb).min(f64::from(BAR_W + 6) / px_per_x);
    let mut plots = Vec::new();
    for (mi, mode) in data.modes.iter().enumerate() {
        let p = layout.panels[mi];
        let plot = layout.plots[mi];
        let area = root
            .clone()
            .shrink((p.x0, p.y0), (p.x1 - p.x0, p.y1 - p.y0));
        let caption = match *mode {
            "static" => "static: Linear, u8 in, u8 out",
            _ => "dynamic: DynamicLinear, f32 in, f32 out",
        };
        area.draw(&Text::new(
            caption,
            (Y_LABEL_W, PANEL_CAPTION_H / 2),
            text_style(TEXT_SIZE + 1.0, BLACK, HPos::Left, VPos::Center),
        ))
        .map_err(e)?;
        let mut chart = ChartBuilder::on(&area)
            .margin_top(PANEL_CAPTION_H)
            .margin_right(p.x1 - plot.x1)
            .x_label_area_size(X_LABEL_H)
            .y_label_area_size(Y_LABEL_W)
            .build_cartesian_2d(-0.5f64..xmax, (y0..y1).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(8)
            .y_label_formatter(&|v| tick(*v))
            .y_label_style(("sans-serif", SMALL_SIZE))
            .axis_desc_style(("sans-serif", TEXT_SIZE))
            .y_desc("GMAC/s (log scale)")
            .x_desc("shape M×K×N (rows × in_features × out_features)")
            .bold_line_style(BLACK.mix(0.15))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(e)?;
        let (px, py) = chart.plotting_area().get_pixel_range();
        plots.push(Rect {
            x0: px.start,
            y0: py.start,
            x1: px.end,
            y1: py.end,
        });

        // Group separators and shape labels.
        for s in 1..groups {
            let x = s as f64 - 0.5;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(x, y0), (x, y1)],
                    BLACK.mix(0.1).stroke_width(1),
                )))
                .map_err(e)?;
        }
        for (s, &(m, k, n)) in data.shapes.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(s as f64, y0));
            root.draw(&Text::new(
                format!("{m}×{k}×{n}"),
                (x, y + 8),
                text_style(SMALL_SIZE, BLACK, HPos::Center, VPos::Top),
            ))
            .map_err(e)?;
        }

        // Peak lines, under the bars, and their labels in the right margin.
        let mut labels = Vec::new();
        for pk in &data.peaks {
            let c = data.color(pk.backend);
            // Inside the axis range (a peak beyond it sits on the edge, value in its label).
            let at = pk.gmacs.clamp(y0, y1);
            chart
                .draw_series(DashedLineSeries::new(
                    [(-0.5, at), (xmax, at)],
                    7,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(e)?;
            let (_, y) = chart.backend_coord(&(xmax, at));
            labels.push((
                y,
                format!("{} peak {:.0} GMAC/s", data.backends[pk.backend], pk.gmacs),
                c,
            ));
        }
        labels.sort_by_key(|l| l.0);
        let mut ys: Vec<i32> = labels.iter().map(|l| l.0).collect();
        let r = layout.peak_labels[mi];
        spread(&mut ys, 17, r.y0 + 8, r.y1 - 8);
        for ((_, text, c), y) in labels.into_iter().zip(ys) {
            root.draw(&Text::new(
                text,
                (r.x0 + 8, y),
                text_style(SMALL_SIZE, c, HPos::Left, VPos::Center),
            ))
            .map_err(e)?;
        }

        // Bars; inexact ones outlined in red with a red ✗ above.
        for bar in data.bars.iter().filter(|b| b.mode == *mode) {
            let left = bar.shape as f64 - slot * nb / 2.0 + slot * bar.backend as f64;
            let (bx0, bx1) = (left + slot * 0.08, left + slot * 0.92);
            let top = if bar.gmacs.is_finite() && bar.gmacs > 0.0 {
                bar.gmacs.clamp(y0, y1)
            } else {
                y0
            };
            let corners = [(bx0, y0), (bx1, top)];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    corners,
                    data.color(bar.backend).filled(),
                )))
                .map_err(e)?;
            let (x, y) = chart.backend_coord(&((bx0 + bx1) / 2.0, top));
            // The value on a white patch, so a peak line never runs through it.
            let label = value(bar.gmacs);
            let half = text_width(&label, VALUE_SIZE) / 2 + 1;
            root.draw(&Rectangle::new(
                [(x - half, y - 14), (x + half, y - 2)],
                WHITE.mix(0.85).filled(),
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                label,
                (x, y - 2),
                text_style(VALUE_SIZE, BLACK, HPos::Center, VPos::Bottom),
            ))
            .map_err(e)?;
            if !bar.exact {
                let (lx, by) = chart.backend_coord(&(bx0, y0));
                let (rx, ty) = chart.backend_coord(&(bx1, top));
                root.draw(&outline((lx, ty), (rx, by))).map_err(e)?;
                root.draw(&Text::new(
                    "✗",
                    (x, y - 15),
                    text_style(TEXT_SIZE + 3.0, INEXACT, HPos::Center, VPos::Bottom),
                ))
                .map_err(e)?;
            }
        }
    }
    root.present().map_err(e)?;
    Ok(plots)
}

/// Writes the plot of `report` to `path` (SVG).
pub fn write_svg(path: &Path, report: &Report) -> Result<(), String> {
    let data = PlotData::from_report(report).map_err(|e| format!("plot: {e}"))?;
    write_data(path, &data)
}

/// Re-renders the plot from the JSON report `json` (as written by `bench --json`) to
/// `out`, without re-running anything.
pub fn replot(json: &Path, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let data = PlotData::from_json(&v).map_err(|e| format!("{}: {e}", json.display()))?;
    write_data(out, &data)
}

fn write_data(path: &Path, data: &PlotData) -> Result<(), String> {
    let layout = Layout::new(data);
    let root = SVGBackend::new(path, (layout.width, layout.height)).into_drawing_area();
    draw(&root, data, &layout).map_err(|e| format!("plot {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::{BenchResult, Probes};
    use crate::probe::PeakProbe;

    fn result(backend: &str, mode: &'static str, m: usize, gmacs: f64, exact: bool) -> BenchResult {
        BenchResult {
            backend: backend.into(),
            kernel: backend.into(),
            mode,
            m,
            k: 768,
            n: 3072,
            threads: 1,
            median_s: 1e-3,
            min_s: 1e-3,
            iterations: 3,
            gmacs,
            peak_gmacs: None,
            peak_fraction: None,
            weight_gbps: None,
            stream_gbps: None,
            stream_fraction: None,
            speedup_vs_reference: None,
            exact,
            mismatches: usize::from(!exact) * 7,
        }
    }

    /// Two shapes, two backends, both modes; avx2 dynamic at M = 8 is inexact.
    fn report() -> Report {
        let mut results = Vec::new();
        for mode in ["static", "dynamic"] {
            for m in [1, 8] {
                results.push(result("avx2", mode, m, 40.0 * m as f64, true));
                results.push(result("reference", mode, m, 1.2, true));
            }
        }
        results[6].exact = false;
        results[6].mismatches = 7;
        let mut peak = BTreeMap::new();
        peak.insert(
            "avx2".to_string(),
            PeakProbe {
                backend: "avx2",
                instruction: "vpmaddwd ymm + vpaddd ymm",
                macs_per_instr: 16,
                gmacs: 123.4,
                threads: 1,
            },
        );
        Report {
            cpu: "Test CPU".into(),
            arch: "x86_64",
            features: BTreeMap::new(),
            threads: 1,
            suite: "custom".into(),
            quick: false,
            max_seconds: 0.3,
            probes: Probes {
                peak,
                stream: vec![],
            },
            results,
            pack: vec![],
            wall_seconds: 1.0,
        }
    }

    fn render(data: &PlotData) -> (String, Layout, Vec<Rect>) {
        let layout = Layout::new(data);
        let mut svg = String::new();
        let plots = {
            let root = SVGBackend::with_string(&mut svg, (layout.width, layout.height))
                .into_drawing_area();
            draw(&root, data, &layout).unwrap()
        };
        (svg, layout, plots)
    }

    /// `(x, y, text)` of every `<text>` element.
    fn texts(svg: &str) -> Vec<(i32, i32, String)> {
        let attr = |tag: &str, name: &str| -> i32 {
            let at = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            let end = at + tag[at..].find('"').unwrap();
            tag[at..end].parse::<f64>().unwrap().round() as i32
        };
        svg.split("<text")
            .skip(1)
            .map(|t| {
                let open = &t[..t.find('>').unwrap()];
                let body = &t[open.len() + 1..t.find("</text>").unwrap()];
                let body = body
                    .replace("&apos;", "'")
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
                    .trim()
                    .to_string();
                (attr(open, "x"), attr(open, "y"), body)
            })
            .collect()
    }

    #[test]
    fn svg_has_bars_legend_peak_label_and_inexact_marker() {
        let data = PlotData::from_report(&report()).unwrap();
        assert_eq!(data.modes, ["static", "dynamic"]);
        assert_eq!(data.bars.len(), 8);
        let (svg, layout, _) = render(&data);
        assert!(svg.contains("<svg"), "not an SVG");
        assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
        let t = texts(&svg);
        let has = |s: &str| t.iter().any(|(_, _, body)| body.contains(s));
        assert!(has("qlinear bench: Test CPU, 1 thread, suite custom"));
        for entry in [
            "avx2",
            "reference",
            "measured peak",
            "✗ inexact",
            "(1 of 8)",
        ] {
            assert!(has(entry), "legend entry {entry:?} missing");
        }
        // Peak labels carry their unit, once per panel.
        let peak_labels = t.iter().filter(|x| x.2 == "avx2 peak 123 GMAC/s").count();
        assert_eq!(peak_labels, 2);
        // Shape labels, panel captions, axis units.
        assert!(has("1×768×3072") && has("8×768×3072"));
        assert!(has("static: Linear") && has("dynamic: DynamicLinear"));
        assert!(has("GMAC/s (log scale)"));
        // One ✗ on a bar (besides the legend's), in the dynamic panel's plot area.
        let marks: Vec<_> = t.iter().filter(|x| x.2 == "✗").collect();
        assert_eq!(marks.len(), 1);
        let p = layout.plots[1];
        assert!(p.x0 < marks[0].0 && marks[0].0 < p.x1);
        assert!(p.y0 < marks[0].1 && marks[0].1 < p.y1);
        // The inexact bar has the red outline.
        assert_eq!(
            svg.matches("stroke=\"#D62728\"").count(),
            2,
            "no red outline"
        );
    }

    #[test]
    fn all_exact_says_so_and_marks_nothing() {
        let mut r = report();
        r.results.iter_mut().for_each(|x| x.exact = true);
        let (svg, _, _) = render(&PlotData::from_report(&r).unwrap());
        let t = texts(&svg);
        assert!(t.iter().any(|x| x.2.contains("inexact: none (all 8")));
        assert!(!t.iter().any(|x| x.2 == "✗"));
        // Only the legend's key is red.
        assert_eq!(svg.matches("stroke=\"#D62728\"").count(), 1);
    }

    #[test]
    fn legend_and_labels_stay_out_of_the_plot_areas() {
        let data = PlotData::from_report(&report()).unwrap();
        let (svg, layout, plots) = render(&data);
        // plotters put the plotting areas where the layout says.
        assert_eq!(plots, layout.plots);
        for (i, plot) in layout.plots.iter().enumerate() {
            assert!(!layout.legend.overlaps(plot), "legend over panel {i}");
            assert!(!layout.peak_labels[i].overlaps(plot));
            assert!(layout.panels[i].contains(plot));
            assert!(layout.panels[i].contains(&layout.peak_labels[i]));
            for other in &layout.panels[i + 1..] {
                assert!(!layout.panels[i].overlaps(other));
            }
        }
        let canvas = Rect {
            x0: 0,
            y0: 0,
            x1: layout.width as i32,
            y1: layout.height as i32,
        };
        assert!(canvas.contains(&layout.legend));
        // Every legend text, at its estimated size, lies inside the legend strip; so
        // does every peak label inside its margin.
        let t = texts(&svg);
        for (_, text) in data.legend() {
            let (x, y, _) = t.iter().find(|x| x.2 == text).unwrap();
            let r = Rect {
                x0: *x,
                y0: y - 10,
                x1: x + text_width(&text, TEXT_SIZE),
                y1: y + 10,
            };
            assert!(layout.legend.contains(&r), "{text:?} at {r:?}");
            assert!(layout.plots.iter().all(|p| !p.overlaps(&r)));
        }
        for (x, y, text) in t.iter().filter(|x| x.2.ends_with(" peak 123 GMAC/s")) {
            let r = Rect {
                x0: *x,
                y0: y - 8,
                x1: x + text_width(text, SMALL_SIZE),
                y1: y + 8,
            };
            assert!(
                layout.peak_labels.iter().any(|m| m.contains(&r)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn legend_wraps_when_narrow() {
        let mut r = report();
        r.results.retain(|x| x.m == 1);
        let data = PlotData::from_report(&r).unwrap();
        let layout = Layout::new(&data);
        let rows: std::collections::BTreeSet<i32> =
            layout.legend_items.iter().map(|p| p.1).collect();
        assert!(rows.len() > 1, "expected a wrapped legend");
        assert_eq!(
            layout.legend.y1,
            layout.legend.y0 + 2 * LEGEND_PAD + rows.len() as i32 * LEGEND_ROW_H
        );
        for &(x, _) in &layout.legend_items {
            assert!(x >= layout.legend.x0 && x < layout.legend.x1);
        }
    }

    #[test]
    fn json_round_trip_gives_the_same_picture() {
        let r = report();
        let v = serde_json::to_value(&r).unwrap();
        let from_json = PlotData::from_json(&v).unwrap();
        assert_eq!(from_json, PlotData::from_report(&r).unwrap());
        let (a, _, _) = render(&from_json);
        let (b, _, _) = render(&PlotData::from_report(&r).unwrap());
        assert_eq!(a, b, "rendering is deterministic and JSON-equivalent");
        let mut bad = v.clone();
        bad["results"][2].as_object_mut().unwrap().remove("exact");
        let e = PlotData::from_json(&bad).unwrap_err();
        assert!(e.contains("results[2]") && e.contains("exact"), "{e}");
    }

    #[test]
    fn one_mode_one_panel_and_empty_is_an_error() {
        let mut r = report();
        r.results.retain(|x| x.mode == "dynamic");
        let data = PlotData::from_report(&r).unwrap();
        assert_eq!(data.modes, ["dynamic"]);
        assert_eq!(Layout::new(&data).plots.len(), 1);
        r.results.clear();
        assert!(PlotData::from_report(&r).is_err());
    }

    /// plotters' log axis never ends on an infinite or zero bound, or on a ratio of the
    /// bounds that overflows f64: the y range stays finite whatever the report holds.
    #[test]
    fn y_range_is_finite_for_extreme_values() {
        for (bar, peak) in [
            (1e308, None),
            (f64::MAX, None),
            (5e-324, None),
            (1e-310, None),
            (10.0, Some(1e308)),
            (1e-300, Some(1e300)),
            (0.0, Some(-1.0)),
        ] {
            let mut r = report();
            r.results.iter_mut().for_each(|x| x.gmacs = bar);
            let mut d = PlotData::from_report(&r).unwrap();
            d.peaks = peak
                .into_iter()
                .map(|gmacs| Peak { backend: 0, gmacs })
                .collect();
            let (lo, hi) = d.y_range();
            assert!(
                lo > 0.0 && hi.is_finite() && lo < hi && (hi / lo).is_finite(),
                "bars {bar:e}, peak {peak:?}: y range {lo:e}..{hi:e}"
            );
            assert!(hi / lo <= 1e30, "bars {bar:e}: {lo:e}..{hi:e}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(tick(1000.0), "1000");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.001), "0.001");
        assert_eq!(tick(1e-5), "1e-5");
        assert_eq!(value(6e-6), "6.0e-6");
        assert_eq!(value(0.05), "0.1");
        assert_eq!(value(0.0), "0.0");
        let mut ys = [100, 105, 300];
        spread(&mut ys, 17, 0, 400);
        assert_eq!(ys, [100, 117, 300]);
        let mut ys = [395, 398];
        spread(&mut ys, 17, 0, 400);
        assert_eq!(ys, [383, 400]);
        let d = PlotData::from_report(&report()).unwrap();
        let (lo, hi) = d.y_range();
        assert_eq!((lo, hi), (0.1, 960.0));
        assert_eq!(value(553.5), "554");
        assert_eq!(value(9.96), "10");
        assert_eq!(value(1.25), "1.2");
        assert_eq!(d.color(1), REFERENCE);
        assert_eq!(d.color(0), PALETTE[0]);
    }
}
