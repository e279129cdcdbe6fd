//! A small description of a figure (panels of lines, markers, bands, cells and text on linear or
//! log axes) and its rendering to SVG with plotters.
//!
//! Figures are built as plain data first, so the report code stays free of drawing calls and
//! tests can inspect what a figure holds. Log axes are drawn as linear axes over `log10` of the
//! data, with ticks chosen here (decades, or 1-2-5 steps when the data span less than a decade),
//! so every axis gets readable tick labels.

use std::path::Path;

use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::DrawingErrorKind;

/// Font family of every text in the figures (the SVG viewer picks the face; no font files needed).
const FONT: &str = "sans-serif";

/// An RGB color.
pub type Rgb = (u8, u8, u8);

/// One axis: its label (with unit), scale, and optionally a fixed range and ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Label, with the unit in parentheses.
    pub label: String,
    /// Logarithmic scale.
    pub log: bool,
    /// Fixed range in data units (else from the data, padded).
    pub range: Option<(f64, f64)>,
    /// Fixed ticks `(position in data units, label)` (else chosen from the range).
    pub ticks: Option<Vec<(f64, String)>>,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            log: false,
            range: None,
            ticks: None,
        }
    }

    /// A logarithmic axis.
    pub fn log(label: impl Into<String>) -> Self {
        Self {
            log: true,
            ..Self::linear(label)
        }
    }

    /// The same axis over a fixed range.
    pub fn with_range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }

    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn valid(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }
}

/// Marker shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A circle.
    Circle,
    /// A square.
    Square,
    /// An upward triangle.
    Triangle,
    /// A diamond.
    Diamond,
    /// A five-pointed star (optima).
    Star,
}

/// What a panel draws, in data units.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// A polyline.
    Line {
        /// Vertices.
        pts: Vec<(f64, f64)>,
        /// Color.
        color: Rgb,
        /// Stroke width in pixels.
        width: u32,
        /// Opacity 0..1.
        opacity: f64,
        /// Dashed.
        dashed: bool,
    },
    /// Markers.
    Points {
        /// Centers.
        pts: Vec<(f64, f64)>,
        /// Color.
        color: Rgb,
        /// Shape.
        marker: Marker,
        /// Radius in pixels.
        size: u32,
        /// Opacity 0..1.
        opacity: f64,
    },
    /// A filled band between two curves over the same x.
    Band {
        /// Points `(x, lower, upper)`.
        pts: Vec<(f64, f64, f64)>,
        /// Color.
        color: Rgb,
        /// Opacity 0..1.
        opacity: f64,
    },
    /// A rectangle filled by the color scale, value 0..1 (heat maps), with the value written in it.
    Cell {
        /// Corners `(x0, y0)`, `(x1, y1)`.
        rect: ((f64, f64), (f64, f64)),
        /// Value on the color scale, 0..1.
        value: f64,
        /// Text written at its center.
        text: String,
    },
    /// A text at a data position.
    Text {
        /// Anchor (left-center).
        at: (f64, f64),
        /// The text.
        text: String,
        /// Color.
        color: Rgb,
    },
}

impl Mark {
    /// A solid opaque line of width 2: a fitted law, or the series a section compares.
    pub fn line(pts: Vec<(f64, f64)>, color: Rgb) -> Self {
        Self::Line {
            pts,
            color,
            width: 2,
            opacity: 1.0,
            dashed: false,
        }
    }

    /// Small translucent markers of radius 3: every run, behind the points a section compares.
    pub fn faint_points(pts: Vec<(f64, f64)>, color: Rgb, marker: Marker) -> Self {
        Self::Points {
            pts,
            color,
            marker,
            size: 3,
            opacity: 0.45,
        }
    }

    /// Opaque markers of radius 5: the points a section compares (optima, best runs, means).
    pub fn points(pts: Vec<(f64, f64)>, color: Rgb, marker: Marker) -> Self {
        Self::Points {
            pts,
            color,
            marker,
            size: 5,
            opacity: 1.0,
        }
    }
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    /// The text.
    pub label: String,
    /// Color.
    pub color: Rgb,
    /// Draw a line segment (dashed or not).
    pub line: Option<bool>,
    /// Draw a marker.
    pub marker: Option<Marker>,
    /// Draw a filled box (bands).
    pub band: bool,
}

impl LegendEntry {
    /// A line with a marker on it.
    pub fn line_marker(label: impl Into<String>, color: Rgb, marker: Marker) -> Self {
        Self {
            label: label.into(),
            color,
            line: Some(false),
            marker: Some(marker),
            band: false,
        }
    }

    /// A plain line (dashed or not).
    pub fn line(label: impl Into<String>, color: Rgb, dashed: bool) -> Self {
        Self {
            label: label.into(),
            color,
            line: Some(dashed),
            marker: None,
            band: false,
        }
    }

    /// A marker alone.
    pub fn marker(label: impl Into<String>, color: Rgb, marker: Marker) -> Self {
        Self {
            label: label.into(),
            color,
            line: None,
            marker: Some(marker),
            band: false,
        }
    }

    /// A filled box.
    pub fn band(label: impl Into<String>, color: Rgb) -> Self {
        Self {
            label: label.into(),
            color,
            line: None,
            marker: None,
            band: true,
        }
    }
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendPos {
    /// Upper right corner inside the plot.
    UpperRight,
    /// Upper left.
    UpperLeft,
    /// Lower left.
    LowerLeft,
    /// Lower right.
    LowerRight,
}

/// One panel: a title, two axes, marks and a legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// Title above the panel.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// What is drawn, in order; the axes' ranges are fitted to these.
    pub marks: Vec<Mark>,
    /// Drawn first, underneath, and cut to the range the marks set (e.g. loss curves whose early
    /// steps would otherwise stretch the axes).
    pub underlay: Vec<Mark>,
    /// Legend entries (none: no legend).
    pub legend: Vec<LegendEntry>,
    /// Legend position.
    pub legend_pos: LegendPos,
    /// Label of a color bar beside the panel (heat maps), for `Mark::Cell` values 0..1.
    pub colorbar: Option<String>,
    /// Grid lines.
    pub grid: bool,
}

impl Plot {
    /// An empty panel.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Self {
            title: title.into(),
            x,
            y,
            marks: Vec::new(),
            underlay: Vec::new(),
            legend: Vec::new(),
            legend_pos: LegendPos::UpperRight,
            colorbar: None,
            grid: true,
        }
    }
}

/// A figure: panels side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The panels, left to right.
    pub panels: Vec<Plot>,
    /// Size in pixels.
    pub size: (u32, u32),
}

impl Figure {
    /// A one-panel figure of the default size.
    pub fn single(plot: Plot) -> Self {
        Self {
            panels: vec![plot],
            size: (900, 620),
        }
    }
}

impl From<Plot> for Figure {
    fn from(plot: Plot) -> Self {
        Self::single(plot)
    }
}

/// The color of value `v` (0..1) on the heat-map scale (viridis).
pub fn scale_color(v: f64) -> Rgb {
    let c: RGBColor = ViridisRGB::get_color(v.clamp(0.0, 1.0));
    (c.0, c.1, c.2)
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// `1e-4`, `2.5e-3`, `300`, `0.25`: a short tick label.
pub fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_string();
    }
    let e = a.log10().floor() as i32;
    let m = v / 10f64.powi(e);
    if (m.abs() - 1.0).abs() < 1e-9 {
        format!("{}1e{e}", if v < 0.0 { "-" } else { "" })
    } else {
        let s = format!("{m:.2}");
        format!("{}e{e}", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Ticks for a linear range: about `n` steps of 1, 2 or 5 times a power of ten.
pub fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks for a log range (data units), returned as `(major, minor)`: decades when the range
/// spans three or more (every other one past 8 decades); else 1, 2 and 5 times the powers of ten
/// inside it, or all of 1..9 times them, whichever gives 3 to 10 ticks; else (well under a decade)
/// the linear 1-2-5 ticks of the range. Minor ticks are 2..9 times the powers of ten.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (a, b) = (lo.log10(), hi.log10());
    let mut minor = Vec::new();
    let multiples = |ms: &[f64]| {
        let mut v = Vec::new();
        for e in (a.floor() as i32)..=(b.ceil() as i32) {
            for m in ms {
                let x = m * 10f64.powi(e);
                if x >= lo && x <= hi {
                    v.push(x);
                }
            }
        }
        v
    };
    minor.extend(multiples(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]));
    if b - a >= 3.0 {
        let decades: Vec<i32> = (a.ceil() as i32..=b.floor() as i32).collect();
        let stride = decades.len().div_ceil(8);
        let major = decades
            .iter()
            .filter(|e| ((*e - decades[0]) as usize).is_multiple_of(stride))
            .map(|e| 10f64.powi(*e))
            .collect();
        return (major, minor);
    }
    for ms in [
        &[1.0, 2.0, 5.0][..],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..],
    ] {
        let major = multiples(ms);
        if (3..=10).contains(&major.len()) {
            return (major, minor);
        }
    }
    (linear_ticks(lo, hi, 7), minor)
}

/// The data range an axis shows: its fixed range, else the data's, padded.
fn axis_range(axis: &Axis, values: &[f64]) -> (f64, f64) {
    if let Some(r) = axis.range {
        return r;
    }
    let v: Vec<f64> = values.iter().copied().filter(|v| axis.valid(*v)).collect();
    let (mut lo, mut hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    if !lo.is_finite() {
        return if axis.log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if axis.log {
        let span = (hi / lo).log10().max(0.1);
        let pad = 10f64.powf(0.06 * span);
        (lo / pad, hi * pad)
    } else {
        if hi == lo {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= d;
            hi += d;
        }
        let pad = 0.06 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

fn mark_values(marks: &[Mark]) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for m in marks {
        match m {
            Mark::Line { pts, .. } | Mark::Points { pts, .. } => {
                xs.extend(pts.iter().map(|p| p.0));
                ys.extend(pts.iter().map(|p| p.1));
            }
            Mark::Band { pts, .. } => {
                xs.extend(pts.iter().map(|p| p.0));
                ys.extend(pts.iter().flat_map(|p| [p.1, p.2]));
            }
            Mark::Cell { rect, .. } => {
                xs.extend([rect.0 .0, rect.1 .0]);
                ys.extend([rect.0 .1, rect.1 .1]);
            }
            Mark::Text { .. } => {}
        }
    }
    (xs, ys)
}

/// Splits a polyline into the runs of consecutive vertices inside the box (lines leaving the
/// plot are cut there rather than drawn over the axes).
fn clip_line(pts: &[(f64, f64)], xr: (f64, f64), yr: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let inside = |p: &(f64, f64)| {
        p.0.is_finite()
            && p.1.is_finite()
            && p.0 >= xr.0 - 1e-9
            && p.0 <= xr.1 + 1e-9
            && p.1 >= yr.0 - 1e-9
            && p.1 <= yr.1 + 1e-9
    };
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur = Vec::new();
    for p in pts {
        if inside(p) {
            cur.push(*p);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A linear axis over `lo..hi` with the ticks given (major: labelled grid lines, minor: light
/// ones). Log axes use it over `log10` of the data.
#[derive(Debug, Clone)]
struct Ticked {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A marker, or a legend glyph (box, line, marker), drawn in pixels around one anchor point.
struct Glyph<C> {
    at: C,
    band: Option<ShapeStyle>,
    line: Option<(ShapeStyle, bool)>,
    marker: Option<(Marker, i32, ShapeStyle)>,
    /// Horizontal offset of the marker from the anchor.
    dx: i32,
}

impl<'b, C> PointCollection<'b, C> for &'b Glyph<C> {
    type Point = &'b C;
    type IntoIter = std::iter::Once<&'b C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Glyph<C> {
    fn draw<I: Iterator<Item = (i32, i32)>>(
        &self,
        mut pos: I,
        b: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        if let Some(st) = &self.band {
            b.draw_rect((x, y - 6), (x + 22, y + 6), st, true)?;
        }
        match &self.line {
            Some((st, true)) => {
                for k in 0..3 {
                    b.draw_line((x + 8 * k, y), (x + 8 * k + 5, y), st)?;
                }
            }
            Some((st, false)) => b.draw_line((x, y), (x + 22, y), st)?,
            None => {}
        }
        if let Some((m, s, st)) = &self.marker {
            let (cx, cy, s) = (x + self.dx, y, *s);
            let shift = |v: Vec<(i32, i32)>| v.into_iter().map(move |(a, c)| (cx + a, cy + c));
            match m {
                Marker::Circle => b.draw_circle((cx, cy), s as u32, st, true)?,
                Marker::Square => b.draw_rect((cx - s, cy - s), (cx + s, cy + s), st, true)?,
                Marker::Triangle => {
                    b.fill_polygon(shift(vec![(0, -s - 1), (-s - 1, s), (s + 1, s)]), st)?
                }
                Marker::Diamond => b.fill_polygon(
                    shift(vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0)]),
                    st,
                )?,
                Marker::Star => b.fill_polygon(shift(star(s as f64 * 1.9)), st)?,
            }
        }
        Ok(())
    }
}

fn marker_element(
    at: (f64, f64),
    marker: Marker,
    size: u32,
    style: ShapeStyle,
) -> Glyph<(f64, f64)> {
    Glyph {
        at,
        band: None,
        line: None,
        marker: Some((marker, size as i32, style)),
        dx: 0,
    }
}

fn star(r: f64) -> Vec<(i32, i32)> {
    (0..10)
        .map(|i| {
            let rr = if i % 2 == 0 { r } else { r * 0.45 };
            let a = std::f64::consts::PI * (i as f64 / 5.0 - 0.5);
            ((rr * a.cos()).round() as i32, (rr * a.sin()).round() as i32)
        })
        .collect()
}

/// The glyph of a legend entry, from the legend's anchor.
fn legend_element(e: &LegendEntry, at: (i32, i32)) -> Glyph<(i32, i32)> {
    let color = rgb(e.color);
    Glyph {
        at,
        band: e.band.then(|| color.mix(0.25).filled()),
        line: e.line.map(|dashed| (color.stroke_width(2), dashed)),
        marker: e.marker.map(|m| (m, 4, color.filled())),
        dx: 11,
    }
}

/// Renders a figure to an SVG file.
pub fn render_svg(fig: &Figure, path: &Path) -> Result<(), String> {
    let svg = svg_string(fig)?;
    std::fs::write(path, svg).map_err(|e| e.to_string())
}

/// Renders a figure to SVG text.
pub fn svg_string(fig: &Figure) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, fig.size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, fig.panels.len().max(1)));
        for (plot, area) in fig.panels.iter().zip(areas) {
            draw_panel(plot, &area).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult<'a> =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

fn draw_panel<'a>(plot: &Plot, area: &Area<'a>) -> DrawResult<'a> {
    let (main, bar) = match plot.colorbar {
        Some(_) => {
            let w = area.dim_in_pixel().0 as i32;
            let (a, b) = area.split_horizontally(w - 120);
            (a, Some(b))
        }
        None => (area.clone(), None),
    };
    let (xs, ys) = mark_values(&plot.marks);
    let xr = axis_range(&plot.x, &xs);
    let yr = axis_range(&plot.y, &ys);
    let ticks = |axis: &Axis, r: (f64, f64)| -> (Vec<(f64, String)>, Vec<f64>) {
        if let Some(t) = &axis.ticks {
            return (
                t.iter().map(|(v, s)| (axis.t(*v), s.clone())).collect(),
                vec![],
            );
        }
        let (major, minor) = if axis.log {
            log_ticks(r.0, r.1)
        } else {
            (linear_ticks(r.0, r.1, 6), vec![])
        };
        (
            major.iter().map(|v| (axis.t(*v), tick_label(*v))).collect(),
            minor.iter().map(|v| axis.t(*v)).collect(),
        )
    };
    let (xt, xminor) = ticks(&plot.x, xr);
    let (yt, yminor) = ticks(&plot.y, yr);
    let (txr, tyr) = (
        (plot.x.t(xr.0), plot.x.t(xr.1)),
        (plot.y.t(yr.0), plot.y.t(yr.1)),
    );
    let xcoord = Ticked {
        lo: txr.0,
        hi: txr.1,
        major: xt.iter().map(|t| t.0).collect(),
        minor: xminor,
    };
    let ycoord = Ticked {
        lo: tyr.0,
        hi: tyr.1,
        major: yt.iter().map(|t| t.0).collect(),
        minor: yminor,
    };
    let mut chart = ChartBuilder::on(&main)
        .caption(&plot.title, (FONT, 24))
        .margin(14)
        .x_label_area_size(62)
        .y_label_area_size(86)
        .build_cartesian_2d(xcoord, ycoord)?;
    let label_of = |table: &[(f64, String)], v: f64| {
        table
            .iter()
            .min_by(|a, b| (a.0 - v).abs().total_cmp(&(b.0 - v).abs()))
            .map(|t| t.1.clone())
            .unwrap_or_default()
    };
    let xfmt = |v: &f64| label_of(&xt, *v);
    let yfmt = |v: &f64| label_of(&yt, *v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(plot.x.label.as_str())
        .y_desc(plot.y.label.as_str())
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 17))
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04));
    if !plot.grid {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw()?;

    for m in plot.underlay.iter().chain(&plot.marks) {
        draw_mark(&mut chart, plot, m, xr, yr)?;
    }
    if !plot.legend.is_empty() {
        for e in &plot.legend {
            let e2 = e.clone();
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(e.label.clone())
                .legend(move |p| legend_element(&e2, p));
        }
        let pos = match plot.legend_pos {
            LegendPos::UpperRight => SeriesLabelPosition::UpperRight,
            LegendPos::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendPos::LowerLeft => SeriesLabelPosition::LowerLeft,
            LegendPos::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(pos)
            .legend_area_size(30)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    if let (Some(bar), Some(label)) = (bar, &plot.colorbar) {
        draw_colorbar(&bar, label)?;
    }
    Ok(())
}

type Chart<'a, 'c> = ChartContext<'c, SVGBackend<'a>, Cartesian2d<Ticked, Ticked>>;

fn draw_mark<'a>(
    chart: &mut Chart<'a, '_>,
    plot: &Plot,
    m: &Mark,
    xr: (f64, f64),
    yr: (f64, f64),
) -> DrawResult<'a> {
    let tx = |x: f64| plot.x.t(x);
    let ty = |y: f64| plot.y.t(y);
    {
        match m {
            Mark::Line {
                pts,
                color,
                width,
                opacity,
                dashed,
            } => {
                let valid: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| plot.x.valid(p.0) && plot.y.valid(p.1))
                    .copied()
                    .collect();
                let style = rgb(*color).mix(*opacity).stroke_width(*width);
                for seg in clip_line(&valid, xr, yr) {
                    let seg: Vec<(f64, f64)> = seg.iter().map(|p| (tx(p.0), ty(p.1))).collect();
                    if *dashed {
                        chart.draw_series(DashedLineSeries::new(seg, 9, 6, style))?;
                    } else {
                        chart.draw_series(LineSeries::new(seg, style))?;
                    }
                }
            }
            Mark::Points {
                pts,
                color,
                marker,
                size,
                opacity,
            } => {
                let style = rgb(*color).mix(*opacity).filled();
                let inside: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| {
                        plot.x.valid(p.0)
                            && plot.y.valid(p.1)
                            && p.0 >= xr.0
                            && p.0 <= xr.1
                            && p.1 >= yr.0
                            && p.1 <= yr.1
                    })
                    .copied()
                    .collect();
                chart.draw_series(
                    inside
                        .iter()
                        .map(|p| marker_element((tx(p.0), ty(p.1)), *marker, *size, style)),
                )?;
            }
            Mark::Band {
                pts,
                color,
                opacity,
            } => {
                let clamp = |v: f64| v.clamp(yr.0, yr.1);
                let inside: Vec<&(f64, f64, f64)> = pts
                    .iter()
                    .filter(|p| {
                        plot.x.valid(p.0)
                            && plot.y.valid(p.1)
                            && plot.y.valid(p.2)
                            && p.0 >= xr.0
                            && p.0 <= xr.1
                    })
                    .collect();
                if inside.len() >= 2 {
                    let mut poly: Vec<(f64, f64)> =
                        inside.iter().map(|p| (tx(p.0), ty(clamp(p.2)))).collect();
                    poly.extend(inside.iter().rev().map(|p| (tx(p.0), ty(clamp(p.1)))));
                    chart.draw_series(std::iter::once(Polygon::new(
                        poly,
                        rgb(*color).mix(*opacity).filled(),
                    )))?;
                }
            }
            Mark::Cell { rect, value, text } => {
                let fill = rgb(scale_color(*value));
                let (a, b) = (
                    (tx(rect.0 .0), ty(rect.0 .1)),
                    (tx(rect.1 .0), ty(rect.1 .1)),
                );
                chart.draw_series(std::iter::once(Rectangle::new([a, b], fill.filled())))?;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [a, b],
                    WHITE.stroke_width(1),
                )))?;
                let ink = if *value < 0.55 { WHITE } else { BLACK };
                let style = mark_text(16, &ink, HPos::Center);
                chart.draw_series(std::iter::once(Text::new(
                    text.clone(),
                    ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0),
                    style,
                )))?;
            }
            Mark::Text { at, text, color } => {
                if plot.x.valid(at.0) && plot.y.valid(at.1) {
                    let c = rgb(*color);
                    let style = mark_text(15, &c, HPos::Left);
                    chart.draw_series(std::iter::once(Text::new(
                        text.clone(),
                        (tx(at.0), ty(at.1)),
                        style,
                    )))?;
                }
            }
        }
    }
    Ok(())
}

/// The style of a mark's text: `size` px in `color`, its vertical middle on the point and
/// anchored there horizontally at `h`.
fn mark_text(size: u32, color: &RGBColor, h: HPos) -> TextStyle<'_> {
    TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(Pos::new(h, VPos::Center))
}

fn draw_colorbar<'a>(area: &Area<'a>, label: &str) -> DrawResult<'a> {
    let ticks: Vec<f64> = vec![0.0, 0.25, 0.5, 0.75, 1.0];
    let mut chart = ChartBuilder::on(area)
        .margin_top(52)
        .margin_bottom(76)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(62)
        .build_cartesian_2d(
            Ticked {
                lo: 0.0,
                hi: 1.0,
                major: vec![],
                minor: vec![],
            },
            Ticked {
                lo: 0.0,
                hi: 1.0,
                major: ticks,
                minor: vec![],
            },
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_desc(label)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_label_formatter(&|v| tick_label(*v))
        .draw()?;
    let n = 64;
    chart.draw_series((0..n).map(|i| {
        let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
        // Each slice overlaps the next by a little, so no seams show between them.
        Rectangle::new(
            [(0.0, a), (1.0, (b + 0.6 / n as f64).min(1.0))],
            rgb(scale_color((a + b) / 2.0)).filled(),
        )
    }))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (1.0, 1.0)],
        BLACK.mix(0.5).stroke_width(1),
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_decades_over_wide_ranges_and_linear_over_narrow_ones() {
        let (major, _) = log_ticks(2e-6, 3e-2);
        assert_eq!(major, vec![1e-5, 1e-4, 1e-3, 1e-2]);
        let (major, minor) = log_ticks(2.4, 4.1);
        assert_eq!(major, vec![2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0]);
        assert_eq!(minor, vec![3.0, 4.0]);
        let (major, _) = log_ticks(1e-1, 3e1);
        assert_eq!(major, vec![0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        let (major, _) = log_ticks(1.1e-5, 1.2e-4);
        assert_eq!(major, vec![2e-5, 5e-5, 1e-4]);
        let (major, _) = log_ticks(2.0, 9.5);
        assert_eq!(major, vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(1e-5), "1e-5");
        assert_eq!(tick_label(2.5e-5), "2.5e-5");
        assert_eq!(tick_label(3.0), "3");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(1024.0), "1024");
        assert_eq!(tick_label(2e7), "2e7");
    }

    #[test]
    fn lines_are_cut_where_they_leave_the_box() {
        let pts = [(0.0, 0.0), (1.0, 5.0), (2.0, 0.5), (3.0, 0.6)];
        let segs = clip_line(&pts, (0.0, 3.0), (0.0, 1.0));
        assert_eq!(segs, vec![vec![(0.0, 0.0)], vec![(2.0, 0.5), (3.0, 0.6)]]);
    }
}
