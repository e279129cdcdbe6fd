//! Building the report: each section's Markdown and figures from a sweep and its fits.
//!
//! Every section works on whatever columns the sweep has and replaces itself by a one-line note
//! when its data are absent, so one code path serves every sweep kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use scalelab_scaling::fit::{
    budget_groups, fit_rows, isoflop_minimum, isoflop_parabola, FitReport, FitStatus, Law, LawFit,
    ResultRow,
};
use scalelab_scaling::flops::pflops_days;
use scalelab_scaling::paper::PaperLaws;

use crate::plot::{
    scale_color, tick_label, Axis, Figure, LegendEntry, LegendPos, Mark, Marker, Plot, Rgb,
};
use crate::sweep::{abbreviate, Run, Sweep};
use crate::{ReportError, ReportOptions};

/// The report's text, its figures (file name, figure) and the terminal summary.
pub(crate) struct Built {
    pub markdown: String,
    pub figures: Vec<(String, Figure)>,
    pub summary: String,
}

/// Axis labels, with units, shared by the figures.
const COMPUTE: &str = "compute C (PFLOP/s-days)";
const LOSS: &str = "validation loss (nats/token)";
const LOSS_BOTH: &str = "loss (nats/token): lines training, markers validation";
const ACCURACY: &str = "accuracy (fraction correct)";
const GRAY: Rgb = (110, 110, 110);

/// Tableau-10 colors: fixed ones for the paper's architectures, the rest in label order.
const PALETTE: [Rgb; 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 127),
];
const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
];

/// Colors per architecture label, the same in every figure: softmax blue, lightning orange,
/// hybrid green, dense gray, others from the palette in label order.
fn arch_colors(archs: &[String]) -> BTreeMap<String, Rgb> {
    let fixed = |a: &str| match a.to_ascii_lowercase().as_str() {
        "softmax" => Some(PALETTE[0]),
        "lightning" => Some(PALETTE[1]),
        "hybrid" | "hybrid-lightning" => Some(PALETTE[2]),
        "dense" => Some((70, 70, 70)),
        _ => None,
    };
    let mut free = PALETTE[3..9].iter().cycle();
    archs
        .iter()
        .map(|a| (a.clone(), fixed(a).unwrap_or_else(|| *free.next().unwrap())))
        .collect()
}

/// Colors of an ordered series (budgets, small to large): viridis from dark to light green.
fn seq_color(i: usize, n: usize) -> Rgb {
    let t = if n <= 1 {
        0.4
    } else {
        0.85 * i as f64 / (n - 1) as f64
    };
    scale_color(t)
}

/// `1.23e-4`: three significant digits in scientific notation.
fn sci(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let e = x.abs().log10().floor() as i32;
    let m = x / 10f64.powi(e);
    let (m, e) = if format!("{:.2}", m.abs()) == "10.00" {
        (m / 10.0, e + 1)
    } else {
        (m, e)
    };
    format!("{m:.2}e{e}")
}

/// An interval end: scientific, or `unbounded` when the bootstrap produced no finite value.
fn bound(x: f64, infinite: &str) -> String {
    if x.is_finite() {
        sci(x)
    } else {
        infinite.into()
    }
}

/// A count or size: `3.4M`, `120K`, `2.1B`, `512`.
fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A value of a fitted parameter: 4 decimals, or scientific for large and small values.
fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        sci(x)
    } else {
        format!("{x:.4}")
    }
}

fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or_else(|| "".into(), f)
}

fn acc(x: f64) -> String {
    format!("{x:.3}")
}

/// A file-name-safe form of a label.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Linear-interpolated quantile of unsorted values.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < s.len() {
        s[i] * (1.0 - f) + s[i + 1] * f
    } else {
        s[i]
    }
}

fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Why a law was not fitted, in the fit code's words.
fn not_fitted_reason(f: &LawFit) -> String {
    match &f.status {
        FitStatus::Fitted => "fitted".into(),
        FitStatus::TooFewPoints {
            points,
            parameters,
            needed,
            what,
        } => format!(
            "too few points: {points} {what}, but {parameters} parameters need at least {needed}"
        ),
        FitStatus::NoTrend { parameter, lo, hi } => format!(
            "no trend: the interval of exponent {parameter}, [{}, {}], contains 0",
            num(*lo),
            num(*hi)
        ),
        FitStatus::Failed { reason } => format!("failed: {reason}"),
    }
}

struct Ctx<'a> {
    sweep: &'a Sweep,
    opts: &'a ReportOptions,
    /// `L(C) = a C^b` fits and crossings.
    power: FitReport,
    /// `N_opt(C)`, `D_opt(C)` fits.
    isoflop: FitReport,
    archs: Vec<String>,
    colors: BTreeMap<String, Rgb>,
    figures: Vec<(String, Figure)>,
    /// Sections left out and why (for the summary).
    skipped: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn runs_of(&self, arch: &str) -> Vec<&'a Run> {
        self.sweep.runs.iter().filter(|r| r.arch == arch).collect()
    }

    fn color(&self, arch: &str) -> Rgb {
        self.colors.get(arch).copied().unwrap_or(GRAY)
    }

    fn marker(&self, arch: &str) -> Marker {
        let i = self.archs.iter().position(|a| a == arch).unwrap_or(0);
        MARKERS[i % MARKERS.len()]
    }

    fn law(&self, arch: &str, name: &str) -> Option<&LawFit> {
        let rep = if name == "L(C)" {
            &self.power
        } else {
            &self.isoflop
        };
        rep.archs
            .iter()
            .find(|a| a.arch == arch)
            .and_then(|a| a.fits.iter().find(|f| f.law == name))
    }

    fn fitted(&self, arch: &str, name: &str) -> Option<&LawFit> {
        self.law(arch, name).filter(|f| f.is_fitted())
    }

    fn paper(&self, arch: &str) -> Option<PaperLaws> {
        self.power
            .archs
            .iter()
            .find(|a| a.arch == arch)
            .and_then(|a| a.paper)
    }

    /// The budgets of some runs, grouped as the fits group them.
    fn budgets(&self, runs: &[&Run]) -> Vec<Vec<usize>> {
        let rows: Vec<ResultRow> = runs.iter().map(|r| r.result_row()).collect();
        budget_groups(&rows, self.opts.fit.budget_tolerance)
    }

    /// `(x, lower, upper)` of `k x^e` over `xs` from a law's bootstrap samples `[k, e]`.
    fn band(&self, f: &LawFit, xs: &[f64]) -> Vec<(f64, f64, f64)> {
        let tail = (1.0 - self.opts.fit.confidence) / 2.0;
        let samples = f.bootstrap_samples();
        xs.iter()
            .map(|x| {
                let v: Vec<f64> = samples.iter().map(|s| s[0] * x.powf(s[1])).collect();
                (*x, quantile(&v, tail), quantile(&v, 1.0 - tail))
            })
            .collect()
    }

    fn figure(&mut self, file: String, fig: Figure, alt: &str, md: &mut String) {
        let _ = writeln!(md, "![{alt}]({file})\n");
        self.figures.push((file, fig));
    }

    fn skip(&mut self, md: &mut String, section: &str, why: &str) {
        let _ = writeln!(md, "_{why}_\n");
        self.skipped.push(section.to_string());
    }
}

/// Builds the whole report of a sweep (fits included); writes nothing.
pub(crate) fn build(sweep: &Sweep, opts: &ReportOptions) -> Result<Built, ReportError> {
    let rows: Vec<ResultRow> = sweep.runs.iter().map(Run::result_row).collect();
    let source = sweep.dir.join("results.csv").display().to_string();
    let power = fit_rows(&rows, Law::Power, &opts.fit, &source)?;
    let isoflop = fit_rows(&rows, Law::Isoflop, &opts.fit, &source)?;
    let archs: Vec<String> = sweep
        .runs
        .iter()
        .map(|r| r.arch.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut ctx = Ctx {
        sweep,
        opts,
        power,
        isoflop,
        colors: arch_colors(&archs),
        archs,
        figures: Vec::new(),
        skipped: Vec::new(),
    };
    let mut md = header(&ctx);
    section_compute(&mut ctx, &mut md);
    section_isoflop(&mut ctx, &mut md);
    section_laws(&mut ctx, &mut md);
    section_retrieval(&mut ctx, &mut md);
    section_moe(&mut ctx, &mut md);
    section_granularity_norm(&mut ctx, &mut md);
    section_runs(&ctx, &mut md);
    let summary = summary(&ctx);
    Ok(Built {
        markdown: md,
        figures: ctx.figures,
        summary,
    })
}

fn header(ctx: &Ctx) -> String {
    let s = ctx.sweep;
    let mut md = format!("# Sweep report: {}\n\n", s.name);
    let total = s.runs.len() + s.skipped.len();
    let _ = writeln!(
        md,
        "- directory: `{}`\n- kind: {}\n- swept axes: {}\n- created: {}\n- runs: {} in \
         results.csv, {} finished, {} left out\n- fits: scalelab-scaling, {:.0}% percentile \
         intervals from {} bootstrap resamples (seed {}); budgets are runs whose FLOPs agree \
         within {}%\n- compute: C in PFLOP/s-days (1 PFLOP/s-day = 8.64e19 FLOPs), as in the \
         paper's Table 2\n",
        s.dir.display(),
        s.kind.as_deref().unwrap_or("(not given)"),
        if s.axes.is_empty() {
            "(not given)".to_string()
        } else {
            s.axes
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        s.created.as_deref().unwrap_or("(not given)"),
        total,
        s.runs.len(),
        s.skipped.len(),
        100.0 * ctx.opts.fit.confidence,
        ctx.opts.fit.bootstrap,
        ctx.opts.fit.seed,
        100.0 * ctx.opts.fit.budget_tolerance,
    );
    if !s.skipped.is_empty() || !s.notes.is_empty() {
        md.push_str("**Notes on the data**\n\n");
        for k in &s.skipped {
            let _ = writeln!(
                md,
                "- run `{}` ({}, line {} of results.csv) has status `{}`: skipped (not in any \
                 figure or fit)",
                k.name, k.arch, k.line, k.status
            );
        }
        for n in &s.notes {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }
    md
}

/// 1. Loss vs compute per architecture, the fitted `L(C) = a C^b` with bootstrap bands, and the
///    runs' training-loss curves underneath.
fn section_compute(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 1. Loss vs compute\n\n");
    let mut plot = Plot::new("Loss vs compute", Axis::log(COMPUTE), Axis::log(LOSS));
    plot.legend_pos = LegendPos::LowerLeft;
    let (mut any_band, mut any_curve) = (false, false);
    for arch in ctx.archs.clone() {
        let runs = ctx.runs_of(&arch);
        let color = ctx.color(&arch);
        let marker = ctx.marker(&arch);
        for r in &runs {
            let pts: Vec<(f64, f64)> = r
                .curve
                .iter()
                .filter_map(|p| Some((pflops_days(p.flops?), p.train_loss.or(p.val_loss)?)))
                .filter(|p| p.0 > 0.0)
                .collect();
            if pts.len() >= 2 {
                any_curve = true;
                plot.underlay.push(Mark::Line {
                    pts,
                    color,
                    width: 1,
                    opacity: 0.28,
                    dashed: false,
                });
            }
        }
        plot.marks.push(Mark::Points {
            pts: runs
                .iter()
                .map(|r| (pflops_days(r.flops), r.loss))
                .collect(),
            color,
            marker,
            size: 3,
            opacity: 0.45,
        });
        let front: Vec<(f64, f64)> = ctx
            .budgets(&runs)
            .iter()
            .map(|g| {
                let best = g
                    .iter()
                    .map(|i| runs[*i])
                    .min_by(|a, b| a.loss.total_cmp(&b.loss))
                    .expect("budget groups are not empty");
                (pflops_days(best.compute()), best.loss)
            })
            .collect();
        plot.marks.push(Mark::Points {
            pts: front.clone(),
            color,
            marker,
            size: 5,
            opacity: 1.0,
        });
        let label = match ctx.fitted(&arch, "L(C)") {
            Some(f) => {
                let (lo, hi) = front
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                        (a.min(p.0), b.max(p.0))
                    });
                let xs = log_grid(lo / 1.5, hi * 1.5, 48);
                let (a, b) = (f.params[0].value, f.params[1].value);
                plot.marks.push(Mark::Band {
                    pts: ctx.band(f, &xs),
                    color,
                    opacity: 0.16,
                });
                plot.marks.push(Mark::Line {
                    pts: xs.iter().map(|x| (*x, a * x.powf(b))).collect(),
                    color,
                    width: 2,
                    opacity: 1.0,
                    dashed: false,
                });
                any_band = true;
                format!("{arch}: L = {a:.3} C^{b:.4}")
            }
            None => format!("{arch} (no L(C) fit)"),
        };
        plot.legend
            .push(LegendEntry::line_marker(label, color, marker));
    }
    if any_band {
        plot.legend.push(LegendEntry::band(
            format!("{:.0}% bootstrap band", 100.0 * ctx.opts.fit.confidence),
            GRAY,
        ));
    }
    if any_curve {
        plot.legend
            .push(LegendEntry::line("training-loss curves", GRAY, false));
    }
    let fig = Figure {
        panels: vec![plot],
        size: (1000, 680),
    };
    ctx.figure(
        "loss_vs_compute.svg".into(),
        fig,
        "validation loss vs compute, log-log, with fitted power laws",
        md,
    );
    md.push_str(
        "Small markers: the final validation loss of every finished run; large markers: the \
         lowest loss at each budget (the compute-efficient frontier, the points the `L(C)` fit \
         uses); lines: the fitted `L(C) = a C^b` with its bootstrap band",
    );
    if any_curve {
        md.push_str(
            "; thin lines: each run's training loss against the FLOPs spent so far (metrics.jsonl)",
        );
    }
    md.push_str(". The fitted numbers are in section 3.\n\n");
}

/// `(C, N_opt, D_opt)` of one budget.
type Optimum = (f64, f64, f64);

/// A retrieval probe: name, getter, color, marker.
type Probe = (&'static str, fn(&Run) -> Option<f64>, Rgb, Marker);

/// One budget of an IsoFLOP profile: its compute, runs, and parabola minima (or why not).
struct Profile<'r> {
    c: f64,
    runs: Vec<&'r Run>,
    parabola: Option<[f64; 3]>,
    n_opt: Result<f64, String>,
    d_opt: Result<f64, String>,
}

fn profiles<'r>(ctx: &Ctx, runs: &[&'r Run]) -> Vec<Profile<'r>> {
    ctx.budgets(runs)
        .iter()
        .map(|g| {
            let rs: Vec<&Run> = g.iter().map(|i| runs[*i]).collect();
            let c = pflops_days(mean(&rs.iter().map(|r| r.compute()).collect::<Vec<_>>()));
            let loss: Vec<f64> = rs.iter().map(|r| r.loss).collect();
            let ln_n: Vec<f64> = rs.iter().map(|r| r.activated_params.ln()).collect();
            let ln_d: Vec<f64> = rs.iter().map(|r| r.tokens.ln()).collect();
            let few = "fewer than 4 runs (a parabola needs 4)".to_string();
            let (n_opt, d_opt, parabola) = if rs.len() < 4 {
                (Err(few.clone()), Err(few), None)
            } else {
                (
                    isoflop_minimum(&ln_n, &loss)
                        .map(f64::exp)
                        .map_err(str::to_string),
                    isoflop_minimum(&ln_d, &loss)
                        .map(f64::exp)
                        .map_err(str::to_string),
                    isoflop_parabola(&ln_n, &loss),
                )
            };
            Profile {
                c,
                runs: rs,
                parabola,
                n_opt,
                d_opt,
            }
        })
        .collect()
}

/// 2. IsoFLOP curves per architecture (loss vs parameters, one curve per budget, `N_opt`
///    marked), and the optima against compute with the fitted `N_opt(C)`, `D_opt(C)`.
fn section_isoflop(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 2. IsoFLOP curves\n\n");
    let mut any = false;
    let mut optima: Vec<(String, Vec<Optimum>)> = Vec::new();
    for arch in ctx.archs.clone() {
        let runs = ctx.runs_of(&arch);
        let profs = profiles(ctx, &runs);
        if profs.iter().all(|p| p.runs.len() < 3) {
            continue;
        }
        any = true;
        let mut plot = Plot::new(
            format!("IsoFLOP curves: {arch}"),
            Axis::log("activated parameters N (non-embedding)"),
            Axis::linear(LOSS),
        );
        let n = profs.len();
        let mut table = String::from(
            "| budget C (PFLOP/s-days) | runs | N range | N_opt | D_opt | remark |\n\
             | ---: | ---: | --- | ---: | ---: | --- |\n",
        );
        let mut best = Vec::new();
        for (j, p) in profs.iter().enumerate() {
            let color = seq_color(j, n);
            let pts: Vec<(f64, f64)> = p
                .runs
                .iter()
                .map(|r| (r.activated_params, r.loss))
                .collect();
            let (nlo, nhi) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
                    (a.min(q.0), b.max(q.0))
                });
            plot.marks.push(Mark::Points {
                pts,
                color,
                marker: Marker::Circle,
                size: 4,
                opacity: 1.0,
            });
            if let Some(c) = p.parabola {
                plot.marks.push(Mark::Line {
                    pts: log_grid(nlo, nhi, 40)
                        .into_iter()
                        .map(|x| {
                            let l = x.ln();
                            (x, c[0] + c[1] * l + c[2] * l * l)
                        })
                        .collect(),
                    color,
                    width: 2,
                    opacity: 0.9,
                    dashed: false,
                });
                if let Ok(nopt) = p.n_opt {
                    let l = nopt.ln();
                    plot.marks.push(Mark::Points {
                        pts: vec![(nopt, c[0] + c[1] * l + c[2] * l * l)],
                        color: (20, 20, 20),
                        marker: Marker::Star,
                        size: 5,
                        opacity: 1.0,
                    });
                }
            }
            plot.legend.push(LegendEntry::line_marker(
                format!("C = {} PF-days", sci(p.c)),
                color,
                Marker::Circle,
            ));
            let remark = match (&p.n_opt, &p.d_opt) {
                (Ok(_), Ok(_)) => String::new(),
                (Err(e), _) => format!("skipped by the fit: in N {e}"),
                (_, Err(e)) => format!("skipped by the fit: in D {e}"),
            };
            if let (Ok(nopt), Ok(dopt)) = (&p.n_opt, &p.d_opt) {
                best.push((p.c, *nopt, *dopt));
            }
            let _ = writeln!(
                table,
                "| {} | {} | {} to {} | {} | {} | {} |",
                sci(p.c),
                p.runs.len(),
                si(nlo),
                si(nhi),
                p.n_opt.as_ref().map_or("".into(), |v| si(*v)),
                p.d_opt.as_ref().map_or("".into(), |v| si(*v)),
                remark
            );
        }
        if best.iter().any(|_| true) {
            plot.legend.push(LegendEntry::marker(
                "N_opt (parabola minimum)",
                (20, 20, 20),
                Marker::Star,
            ));
        }
        plot.legend_pos = LegendPos::UpperRight;
        ctx.figure(
            format!("isoflop_{}.svg", slug(&arch)),
            Figure::single(plot),
            &format!("IsoFLOP curves of {arch}"),
            md,
        );
        let _ = writeln!(md, "{table}");
        optima.push((arch, best));
    }
    if !any {
        ctx.skip(
            md,
            "IsoFLOP curves",
            "No architecture has several model sizes at one budget: no IsoFLOP curves.",
        );
        return;
    }
    md.push_str(
        "Each curve: the runs of one budget (compute C), loss against activated parameters, with \
         the least-squares parabola in ln N that the `isoflop` fit uses; the star is its minimum \
         N_opt. The fit skips a budget with fewer than 4 runs or whose minimum falls outside the \
         sampled sizes.\n\n",
    );
    if optima.iter().all(|(_, b)| b.is_empty()) {
        ctx.skip(
            md,
            "Optimal allocation",
            "No budget has an interior IsoFLOP minimum: no N_opt(C), D_opt(C) plot.",
        );
        return;
    }
    let mut panels = Vec::new();
    for (which, label) in [
        (1, "compute-optimal parameters N_opt"),
        (2, "compute-optimal tokens D_opt"),
    ] {
        let law = if which == 1 { "N_opt(C)" } else { "D_opt(C)" };
        let mut plot = Plot::new(law, Axis::log(COMPUTE), Axis::log(label));
        plot.legend_pos = LegendPos::UpperLeft;
        for (arch, best) in &optima {
            if best.is_empty() {
                continue;
            }
            let color = ctx.color(arch);
            let marker = ctx.marker(arch);
            let pts: Vec<(f64, f64)> = best
                .iter()
                .map(|b| (b.0, if which == 1 { b.1 } else { b.2 }))
                .collect();
            plot.marks.push(Mark::Points {
                pts: pts.clone(),
                color,
                marker,
                size: 5,
                opacity: 1.0,
            });
            let label = match ctx.fitted(arch, law) {
                Some(f) => {
                    let (lo, hi) = pts
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                            (a.min(p.0), b.max(p.0))
                        });
                    let xs = log_grid(lo / 1.5, hi * 1.5, 40);
                    let (k, e) = (f.params[0].value, f.params[1].value);
                    plot.marks.push(Mark::Band {
                        pts: ctx.band(f, &xs),
                        color,
                        opacity: 0.16,
                    });
                    plot.marks.push(Mark::Line {
                        pts: xs.iter().map(|x| (*x, k * x.powf(e))).collect(),
                        color,
                        width: 2,
                        opacity: 1.0,
                        dashed: false,
                    });
                    format!("{arch}: {} C^{e:.3}", sci(k))
                }
                None => format!("{arch} (no fit)"),
            };
            plot.legend
                .push(LegendEntry::line_marker(label, color, marker));
        }
        panels.push(plot);
    }
    ctx.figure(
        "optimal_allocation.svg".into(),
        Figure {
            panels,
            size: (1300, 600),
        },
        "compute-optimal parameters and tokens vs compute",
        md,
    );
    md.push_str(
        "Markers: the IsoFLOP minima of each budget; lines: the fitted `N_opt(C) = k C^a` and \
         `D_opt(C) = k C^b` with their bootstrap bands (Chinchilla approach 2, as in the \
         paper).\n\n",
    );
}

/// A fitted law's cell: the formula without its left-hand side, then each parameter's interval.
fn law_cell(f: Option<&LawFit>) -> String {
    let Some(f) = f else {
        return "not fitted".into();
    };
    if !f.is_fitted() {
        // The short form; the fit's full reason is in the list below the table.
        let reason = not_fitted_reason(f);
        let short = reason.split(':').next().unwrap_or(&reason);
        return format!("not fitted: {short}");
    }
    let formula = f.formula.as_deref().unwrap_or(&f.law);
    let rhs = formula.split_once(" = ").map_or(formula, |(_, r)| r);
    let ci: Vec<String> = f
        .params
        .iter()
        .map(|p| format!("{} [{}, {}]", p.name, num(p.lo), num(p.hi)))
        .collect();
    format!(
        "**{rhs}**<br>{}<br>R² {:.3}",
        ci.join("; "),
        f.r2_log.unwrap_or(f64::NAN)
    )
}

/// 3. The fitted laws in Table 2's form next to the paper's, the crossings, and the fits that
///    could not be made.
fn section_laws(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 3. Fitted laws and the paper's Table 2\n\n");
    let conf = 100.0 * ctx.opts.fit.confidence;
    let _ = writeln!(
        md,
        "Bold: the fit to this sweep's runs (C in PFLOP/s-days, N and D in parameters and \
         tokens), with each parameter's {conf:.0}% bootstrap interval and R² in log space. \
         Rows marked *paper* are the MiniMax-01 paper's Table 2 (models of 70M-7B parameters, up \
         to 300B tokens); this sweep's models and data differ, so compare the exponents and the \
         ordering of the architectures rather than the coefficients.\n"
    );
    md.push_str(
        "| architecture | source | runs / budgets | L(C) = a C^b | N_opt(C) = k C^a | D_opt(C) = k C^b |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for a in &ctx.power.archs {
        let _ = writeln!(
            md,
            "| {} | this sweep | {} / {} | {} | {} | {} |",
            a.arch,
            a.runs,
            a.budgets,
            law_cell(ctx.law(&a.arch, "L(C)")),
            law_cell(ctx.law(&a.arch, "N_opt(C)")),
            law_cell(ctx.law(&a.arch, "D_opt(C)")),
        );
        if let Some(p) = ctx.paper(&a.arch) {
            let _ = writeln!(
                md,
                "| {} | *paper, Table 2 ({})* | 70M-7B | {:.4} C^{:.4} | {:.2e} C^{:.4} | {:.2e} C^{:.4} |",
                a.arch, p.arch, p.l_a, p.l_b, p.n_k, p.n_a, p.d_k, p.d_b
            );
        }
    }
    md.push('\n');
    let fitted_archs: Vec<&str> = ctx
        .power
        .archs
        .iter()
        .filter(|a| ctx.fitted(&a.arch, "L(C)").is_some())
        .map(|a| a.arch.as_str())
        .collect();
    if ctx.power.crossings.is_empty() {
        let _ = writeln!(
            md,
            "_Crossings: fewer than two architectures have a fitted L(C) ({}), so there is no \
             crossing to compute._\n",
            if fitted_archs.is_empty() {
                "none".to_string()
            } else {
                fitted_archs.join(", ")
            }
        );
    } else {
        md.push_str(
            "**Where the fitted L(C) curves cross.** `C* = (a2/a1)^(1/(b1 - b2))`, with the \
             interval from paired bootstrap resamples; inside means within the compute range \
             both architectures have data in.\n\n\
             | pair | crossing C* (PFLOP/s-days) | interval | where | lower at the top of the shared range | the paper's curves cross at |\n\
             | --- | ---: | --- | --- | --- | ---: |\n",
        );
        for c in &ctx.power.crossings {
            let (lo, hi) = c.range;
            let where_ = match c.pflops_days {
                None => "parallel: never".to_string(),
                Some(_) if lo > hi => "extrapolated: no shared compute range".to_string(),
                Some(_) if c.inside_range => format!("inside [{}, {}]", sci(lo), sci(hi)),
                Some(_) => format!("outside [{}, {}]", sci(lo), sci(hi)),
            };
            let _ = writeln!(
                md,
                "| {} vs {} | {} | {} | {} | {} | {} |",
                c.a,
                c.b,
                c.pflops_days.map_or("none".into(), sci),
                c.interval.map_or(String::new(), |(l, h)| format!(
                    "[{}, {}]",
                    bound(l, "0"),
                    bound(h, "unbounded")
                )),
                where_,
                c.lower_at_top,
                c.paper_pflops_days.map_or(String::new(), sci)
            );
        }
        md.push('\n');
    }
    // Per architecture and reason, the laws that could not be fitted.
    let mut grouped: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rep in [&ctx.power, &ctx.isoflop] {
        for a in &rep.archs {
            for f in a.fits.iter().filter(|f| !f.is_fitted()) {
                grouped
                    .entry((a.arch.clone(), not_fitted_reason(f)))
                    .or_default()
                    .push(f.law.clone());
            }
        }
    }
    let missing: Vec<String> = grouped
        .into_iter()
        .map(|((arch, why), laws)| format!("- {arch} {}: {why}", laws.join(", ")))
        .collect();
    if missing.is_empty() {
        md.push_str("Every law could be fitted for every architecture.\n\n");
    } else {
        md.push_str("**Fits that could not be made** (the fit code's reasons):\n\n");
        for m in &missing {
            let _ = writeln!(md, "{m}");
        }
        md.push('\n');
    }
    if let Some(v) = ordering_verdict(ctx) {
        let _ = writeln!(md, "{v}\n");
    }
    md.push_str(
        "The IsoFLOP budget details and the other laws (`L(C) = E + a C^b`, `L(N, D)`, the MoE \
         law) are printed by `scalelab fit results.csv --law all`.\n\n",
    );
}

/// Whether the fitted `L(C)` exponents order the architectures: pairs whose bootstrap intervals
/// overlap cannot be told apart at this scale, and the report says so instead of ranking them.
fn ordering_verdict(ctx: &Ctx) -> Option<String> {
    let fitted: Vec<(&str, f64, f64)> = ctx
        .power
        .archs
        .iter()
        .filter_map(|a| {
            let f = ctx.fitted(&a.arch, "L(C)")?;
            let b = f.param("b")?;
            Some((a.arch.as_str(), b.lo, b.hi))
        })
        .collect();
    if fitted.len() < 2 {
        return None;
    }
    let mut apart = Vec::new();
    let mut overlap = Vec::new();
    for (i, x) in fitted.iter().enumerate() {
        for y in &fitted[i + 1..] {
            let pair = format!("{} / {}", x.0, y.0);
            if x.2 < y.1 || y.2 < x.1 {
                apart.push(pair);
            } else {
                overlap.push(pair);
            }
        }
    }
    let conf = 100.0 * ctx.opts.fit.confidence;
    Some(if apart.is_empty() {
        format!(
            "**Inconclusive at this scale**: the {conf:.0}% intervals of every pair of fitted \
             `L(C)` exponents overlap ({}), so these runs do not order the architectures; \
             larger models, more budgets or more seeds are needed before comparing them with the \
             paper.",
            overlap.join(", ")
        )
    } else if overlap.is_empty() {
        format!(
            "The {conf:.0}% intervals of the fitted `L(C)` exponents are disjoint for every pair \
             ({}): the runs order the architectures by their exponents.",
            apart.join(", ")
        )
    } else {
        format!(
            "The {conf:.0}% intervals of the fitted `L(C)` exponents separate {} but overlap for \
             {}: only the separated pairs are ordered by these runs.",
            apart.join(", "),
            overlap.join(", ")
        )
    })
}

/// The run of an architecture at its largest budget (FLOPs within `tol` of the most) with the
/// most parameters, whose NIAH cells stand for the architecture in the heat maps.
fn largest_with_cells<'r>(runs: &[&'r Run], tol: f64) -> Option<&'r Run> {
    let with: Vec<&Run> = runs
        .iter()
        .filter(|r| !r.niah_cells.is_empty())
        .copied()
        .collect();
    let top = with
        .iter()
        .map(|r| r.flops)
        .fold(f64::NEG_INFINITY, f64::max);
    with.into_iter()
        .filter(|r| r.flops >= top * (1.0 - tol))
        .max_by(|a, b| a.activated_params.total_cmp(&b.activated_params))
}

/// 4. Retrieval (MQAR, NIAH) vs the share of softmax layers, NIAH vs context length, and NIAH
///    heat maps (context x depth) per architecture.
fn section_retrieval(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 4. Retrieval: MQAR and needle-in-a-haystack\n\n");
    let runs: Vec<&Run> = ctx.sweep.runs.iter().collect();
    let probed: Vec<&Run> = runs
        .iter()
        .filter(|r| r.mqar.is_some() || r.niah.is_some())
        .copied()
        .collect();
    let celled = runs.iter().any(|r| !r.niah_cells.is_empty());
    if probed.is_empty() && !celled {
        ctx.skip(
            md,
            "Retrieval",
            "No run has MQAR or NIAH scores (columns mqar, niah, niah_ctx*_depth*): section skipped.",
        );
        return;
    }
    // Per architecture.
    md.push_str(
        "| architecture | softmax fraction | runs with scores | MQAR (mean) | NIAH (mean) |\n\
         | --- | ---: | ---: | ---: | ---: |\n",
    );
    for arch in &ctx.archs {
        let rs: Vec<&&Run> = probed.iter().filter(|r| &r.arch == arch).collect();
        if rs.is_empty() {
            continue;
        }
        let m = |f: fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            if v.is_empty() {
                String::new()
            } else {
                acc(mean(&v))
            }
        };
        let fr: BTreeSet<String> = rs
            .iter()
            .filter_map(|r| r.softmax_fraction.map(acc))
            .collect();
        let _ = writeln!(
            md,
            "| {arch} | {} | {} | {} | {} |",
            fr.into_iter().collect::<Vec<_>>().join(", "),
            rs.len(),
            m(|r| r.mqar),
            m(|r| r.niah)
        );
    }
    md.push('\n');

    // Scores vs softmax fraction.
    let with_fraction: Vec<&Run> = probed
        .iter()
        .filter(|r| r.softmax_fraction.is_some())
        .copied()
        .collect();
    let fractions: BTreeSet<u64> = with_fraction
        .iter()
        .map(|r| (r.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64)
        .collect();
    if fractions.len() >= 2 {
        let mut plot = Plot::new(
            "Retrieval vs hybrid ratio",
            Axis::linear("softmax fraction (share of softmax attention layers)")
                .with_range(-0.04, 1.04),
            Axis::linear(ACCURACY).with_range(0.0, 1.04),
        );
        plot.legend_pos = LegendPos::LowerRight;
        let mut table = String::from(
            "| softmax fraction | runs | MQAR mean | MQAR min-max | NIAH mean | NIAH min-max |\n\
             | ---: | ---: | ---: | --- | ---: | --- |\n",
        );
        let probes: [Probe; 2] = [
            ("MQAR", |r| r.mqar, (148, 103, 189), Marker::Circle),
            ("NIAH", |r| r.niah, (214, 39, 40), Marker::Square),
        ];
        let mut rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (name, get, color, marker) in probes {
            let mut means = Vec::new();
            let mut all = Vec::new();
            for f in &fractions {
                let v: Vec<f64> = with_fraction
                    .iter()
                    .filter(|r| (r.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64 == *f)
                    .filter_map(|r| get(r))
                    .collect();
                let x = *f as f64 / 1e6;
                let row = rows.entry(*f).or_default();
                if v.is_empty() {
                    row.extend([String::new(), String::new()]);
                    continue;
                }
                all.extend(v.iter().map(|y| (x, *y)));
                means.push((x, mean(&v)));
                let (lo, hi) = (quantile(&v, 0.0), quantile(&v, 1.0));
                row.extend([acc(mean(&v)), format!("{}-{}", acc(lo), acc(hi))]);
            }
            if means.is_empty() {
                continue;
            }
            plot.marks.push(Mark::Points {
                pts: all,
                color,
                marker,
                size: 3,
                opacity: 0.35,
            });
            plot.marks.push(Mark::Line {
                pts: means.clone(),
                color,
                width: 2,
                opacity: 1.0,
                dashed: false,
            });
            plot.marks.push(Mark::Points {
                pts: means,
                color,
                marker,
                size: 5,
                opacity: 1.0,
            });
            plot.legend.push(LegendEntry::line_marker(
                format!("{name} (mean; faint: single runs)"),
                color,
                marker,
            ));
        }
        for (f, cells) in &rows {
            let n = with_fraction
                .iter()
                .filter(|r| (r.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64 == *f)
                .count();
            let _ = writeln!(
                table,
                "| {} | {n} | {} |",
                acc(*f as f64 / 1e6),
                cells.join(" | ")
            );
        }
        ctx.figure(
            "retrieval_vs_softmax_fraction.svg".into(),
            Figure::single(plot),
            "MQAR and NIAH accuracy vs the share of softmax layers",
            md,
        );
        let _ = writeln!(
            md,
            "Accuracy against the share of softmax layers (0: all lightning, 1: all softmax), \
             averaged over every run at that share (all sizes and budgets).\n\n{table}"
        );
    } else {
        ctx.skip(
            md,
            "Retrieval vs hybrid ratio",
            "Runs with scores do not span two softmax fractions: no plot against the hybrid ratio.",
        );
    }

    // NIAH vs context and heat maps.
    if !celled {
        ctx.skip(
            md,
            "NIAH by context and depth",
            "No niah_ctx<L>_depth<P> columns: no NIAH plot against context length or heat map.",
        );
        return;
    }
    let contexts: Vec<u64> = ctx
        .sweep
        .niah_cells
        .iter()
        .map(|c| c.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let depths: Vec<f64> = {
        let mut d: Vec<f64> = ctx.sweep.niah_cells.iter().map(|c| c.1).collect();
        d.sort_by(f64::total_cmp);
        d.dedup();
        d
    };
    let mut xaxis = Axis::log("context length (tokens)");
    xaxis.ticks = Some(
        contexts
            .iter()
            .map(|c| (*c as f64, c.to_string()))
            .collect(),
    );
    if let (Some(lo), Some(hi)) = (contexts.first(), contexts.last()) {
        let (lo, hi) = (*lo as f64, *hi as f64);
        let pad = if hi > lo { (hi / lo).powf(0.06) } else { 1.5 };
        xaxis.range = Some((lo / pad, hi * pad));
    }
    let mut plot = Plot::new(
        "NIAH accuracy vs context length",
        xaxis,
        Axis::linear(ACCURACY).with_range(0.0, 1.04),
    );
    plot.legend_pos = LegendPos::LowerLeft;
    let mut heat = Vec::new();
    for arch in ctx.archs.clone() {
        let runs = ctx.runs_of(&arch);
        let Some(run) = largest_with_cells(&runs, ctx.opts.fit.budget_tolerance) else {
            continue;
        };
        let color = ctx.color(&arch);
        let marker = ctx.marker(&arch);
        let pts: Vec<(f64, f64)> = contexts
            .iter()
            .filter_map(|c| {
                let v: Vec<f64> = run
                    .niah_cells
                    .iter()
                    .filter(|((l, _), _)| l == c)
                    .map(|(_, a)| *a)
                    .collect();
                (!v.is_empty()).then(|| (*c as f64, mean(&v)))
            })
            .collect();
        plot.marks.push(Mark::Line {
            pts: pts.clone(),
            color,
            width: 2,
            opacity: 1.0,
            dashed: false,
        });
        plot.marks.push(Mark::Points {
            pts,
            color,
            marker,
            size: 5,
            opacity: 1.0,
        });
        plot.legend.push(LegendEntry::line_marker(
            format!("{arch} ({})", run.name),
            color,
            marker,
        ));
        heat.push((arch, run));
    }
    ctx.figure(
        "niah_vs_context.svg".into(),
        Figure::single(plot),
        "NIAH accuracy vs context length per architecture",
        md,
    );
    md.push_str(
        "NIAH accuracy, averaged over needle depths, against the context length, for the largest \
         run of each architecture (the most parameters at its largest budget).\n\n",
    );
    for (arch, run) in heat {
        let mut xa = Axis::linear("context length (tokens)").with_range(0.0, contexts.len() as f64);
        xa.ticks = Some(
            contexts
                .iter()
                .enumerate()
                .map(|(i, c)| (i as f64 + 0.5, c.to_string()))
                .collect(),
        );
        let mut ya = Axis::linear("needle depth (fraction of the context)")
            .with_range(0.0, depths.len() as f64);
        ya.ticks = Some(
            depths
                .iter()
                .enumerate()
                .map(|(i, d)| (i as f64 + 0.5, tick_label(*d)))
                .collect(),
        );
        let mut plot = Plot::new(format!("NIAH accuracy: {arch} ({})", run.name), xa, ya);
        plot.grid = false;
        plot.colorbar = Some(ACCURACY.into());
        for ((l, d), v) in &run.niah_cells {
            let (Some(i), Some(j)) = (
                contexts.iter().position(|c| c == l),
                depths.iter().position(|x| x == d),
            ) else {
                continue;
            };
            plot.marks.push(Mark::Cell {
                rect: ((i as f64, j as f64), (i as f64 + 1.0, j as f64 + 1.0)),
                value: *v,
                text: format!("{v:.2}"),
            });
        }
        ctx.figure(
            format!("niah_heatmap_{}.svg", slug(&arch)),
            Figure {
                panels: vec![plot],
                size: (900, 600),
            },
            &format!("NIAH heat map of {arch}"),
            md,
        );
    }
    md.push_str(
        "Heat maps: accuracy per context length (columns) and needle depth (rows, 0 = the start \
         of the context), for the largest run of each architecture.\n\n",
    );
}

/// 5. MoE vs dense at equal FLOPs: loss vs compute for the dense baseline and the MoE variants,
///    and the loss differences at matched budgets.
fn section_moe(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 5. MoE vs dense at equal FLOPs\n\n");
    let moe_archs: Vec<String> = ctx
        .archs
        .iter()
        .filter(|a| ctx.runs_of(a).iter().any(|r| r.is_moe()))
        .cloned()
        .collect();
    if moe_archs.is_empty() {
        ctx.skip(
            md,
            "MoE vs dense",
            "No MoE runs (experts > 1) in this sweep: section skipped.",
        );
        return;
    }
    let Some(dense) = dense_baseline(ctx, &moe_archs) else {
        ctx.skip(
            md,
            "MoE vs dense",
            "No dense run shares a budget with the MoE runs: no comparison at equal FLOPs.",
        );
        return;
    };
    let mut archs = vec![dense.clone()];
    archs.extend(moe_archs.iter().cloned());
    let runs: Vec<&Run> = ctx
        .sweep
        .runs
        .iter()
        .filter(|r| archs.contains(&r.arch))
        .collect();
    let groups = ctx.budgets(&runs);
    let mut plot = Plot::new(
        "MoE vs dense at equal FLOPs",
        Axis::log(COMPUTE),
        Axis::log(LOSS),
    );
    plot.legend_pos = LegendPos::LowerLeft;
    for arch in &archs {
        let color = ctx.color(arch);
        let marker = ctx.marker(arch);
        let best: Vec<(f64, f64)> = groups
            .iter()
            .filter_map(|g| {
                g.iter()
                    .map(|i| runs[*i])
                    .filter(|r| &r.arch == arch)
                    .min_by(|a, b| a.loss.total_cmp(&b.loss))
                    .map(|r| (pflops_days(r.flops), r.loss))
            })
            .collect();
        plot.marks.push(Mark::Points {
            pts: runs
                .iter()
                .filter(|r| &r.arch == arch)
                .map(|r| (pflops_days(r.flops), r.loss))
                .collect(),
            color,
            marker,
            size: 3,
            opacity: 0.45,
        });
        plot.marks.push(Mark::Line {
            pts: best.clone(),
            color,
            width: 2,
            opacity: 1.0,
            dashed: arch == &dense,
        });
        plot.marks.push(Mark::Points {
            pts: best,
            color,
            marker,
            size: 5,
            opacity: 1.0,
        });
        let desc = describe_moe(&ctx.runs_of(arch));
        let mut entry = LegendEntry::line_marker(
            if desc.is_empty() {
                if arch.eq_ignore_ascii_case("dense") {
                    arch.clone()
                } else {
                    format!("{arch} (dense)")
                }
            } else {
                format!("{arch} ({desc})")
            },
            color,
            marker,
        );
        entry.line = Some(arch == &dense);
        plot.legend.push(entry);
    }
    ctx.figure(
        "moe_vs_dense.svg".into(),
        Figure::single(plot),
        "validation loss vs compute, dense vs MoE",
        md,
    );
    let _ = write!(
        md,
        "Lines join the lowest loss of each architecture at each budget; the dense baseline \
         (`{dense}`) is dashed. The training FLOPs count only the activated experts, so runs at \
         one budget spend the same compute.\n\n| budget C (PFLOP/s-days) | {dense} |"
    );
    for m in &moe_archs {
        let _ = write!(md, " {m} | Δ {m} |");
    }
    md.push_str("\n| ---: | ---: |");
    for _ in &moe_archs {
        md.push_str(" ---: | ---: |");
    }
    md.push('\n');
    for g in &groups {
        let best = |arch: &str| {
            g.iter()
                .map(|i| runs[*i])
                .filter(|r| r.arch == arch)
                .map(|r| r.loss)
                .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.min(l))))
        };
        let c = pflops_days(mean(
            &g.iter().map(|i| runs[*i].compute()).collect::<Vec<_>>(),
        ));
        let d = best(&dense);
        let _ = write!(md, "| {} | {} |", sci(c), opt(d, |x| format!("{x:.4}")));
        for m in &moe_archs {
            let l = best(m);
            let delta = match (l, d) {
                (Some(l), Some(d)) => format!("{:+.4}", l - d),
                _ => String::new(),
            };
            let _ = write!(md, " {} | {} |", opt(l, |x| format!("{x:.4}")), delta);
        }
        md.push('\n');
    }
    md.push_str(
        "\nΔ = MoE loss - dense loss at the same budget (nats/token); negative: the MoE is \
         better.\n\n",
    );
}

/// `8 experts, top-2, width 96`: the MoE settings of an architecture's runs.
fn describe_moe(runs: &[&Run]) -> String {
    let set = |f: fn(&Run) -> Option<f64>| {
        runs.iter()
            .filter_map(|r| f(r))
            .map(|v| format!("{v}"))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join("/")
    };
    if !runs.iter().any(|r| r.is_moe()) {
        return String::new();
    }
    let (e, k, w) = (
        set(|r| r.experts),
        set(|r| r.top_k),
        set(|r| r.expert_width),
    );
    let mut parts = Vec::new();
    if !e.is_empty() {
        parts.push(format!("{e} experts"));
    }
    if !k.is_empty() {
        parts.push(format!("top-{k}"));
    }
    if !w.is_empty() {
        parts.push(format!("width {w}"));
    }
    if parts.is_empty() {
        "MoE".into()
    } else {
        parts.join(", ")
    }
}

/// The dense architecture to compare the MoE runs with: `dense` if present, else the non-MoE
/// architecture sharing the most budgets with the MoE runs.
fn dense_baseline(ctx: &Ctx, moe: &[String]) -> Option<String> {
    let tol = ctx.opts.fit.budget_tolerance;
    let moe_flops: Vec<f64> = ctx
        .sweep
        .runs
        .iter()
        .filter(|r| moe.contains(&r.arch))
        .map(|r| r.compute())
        .collect();
    let shared = |arch: &str| {
        ctx.runs_of(arch)
            .iter()
            .filter(|r| {
                let c = r.compute();
                moe_flops.iter().any(|f| (c - f).abs() <= tol * c.max(*f))
            })
            .count()
    };
    let candidates: Vec<&String> = ctx
        .archs
        .iter()
        .filter(|a| !moe.contains(a) && shared(a) > 0)
        .collect();
    candidates
        .iter()
        .find(|a| a.eq_ignore_ascii_case("dense"))
        .or_else(|| candidates.iter().max_by_key(|a| shared(a)))
        .map(|a| a.to_string())
}

/// 6. Expert granularity (loss vs expert count at fixed activated FLOPs) and PreNorm vs DeepNorm
///    (loss curves), when those vary in the sweep.
fn section_granularity_norm(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 6. Expert granularity and normalization\n\n### Expert granularity\n\n");
    let moe: Vec<&Run> = ctx.sweep.runs.iter().filter(|r| r.is_moe()).collect();
    let counts: BTreeSet<u64> = moe
        .iter()
        .filter_map(|r| r.experts.map(|e| e as u64))
        .collect();
    let widths: BTreeSet<u64> = moe
        .iter()
        .filter_map(|r| r.expert_width.map(|e| e as u64))
        .collect();
    if counts.len() < 2 && widths.len() < 2 {
        ctx.skip(
            md,
            "Expert granularity",
            "The expert count and width do not vary among MoE runs: no granularity comparison.",
        );
    } else {
        granularity(ctx, md, &moe);
    }
    md.push_str("### PreNorm vs DeepNorm\n\n");
    let axis_runs: Vec<&Run> = ctx
        .sweep
        .runs
        .iter()
        .filter(|r| r.axis("residual").is_some())
        .collect();
    let norm_runs: Vec<&Run> = if axis_runs.is_empty() {
        ctx.sweep
            .runs
            .iter()
            .filter(|r| r.residual.is_some())
            .collect()
    } else {
        axis_runs
    };
    let modes: BTreeSet<String> = norm_runs
        .iter()
        .filter_map(|r| {
            r.residual
                .clone()
                .or_else(|| r.axis("residual").map(str::to_string))
        })
        .collect();
    if modes.len() < 2 {
        ctx.skip(
            md,
            "PreNorm vs DeepNorm",
            "The residual mode (column residual) does not vary: no PreNorm vs DeepNorm comparison.",
        );
        return;
    }
    norm(ctx, md, &norm_runs, &modes);
}

fn granularity(ctx: &mut Ctx, md: &mut String, moe: &[&Run]) {
    let dense = {
        let names: Vec<String> = moe.iter().map(|r| r.arch.clone()).collect();
        dense_baseline(ctx, &names)
    };
    let mut runs: Vec<&Run> = moe.to_vec();
    if let Some(d) = &dense {
        runs.extend(ctx.runs_of(d));
    }
    let groups = ctx.budgets(&runs);
    let counts: BTreeSet<u64> = runs
        .iter()
        .map(|r| r.experts.filter(|_| r.is_moe()).unwrap_or(1.0) as u64)
        .collect();
    let mut xa = Axis::log("routed experts E (1 = dense)");
    xa.ticks = Some(
        counts
            .iter()
            .map(|c| {
                let l = if *c == 1 {
                    "1 (dense)".into()
                } else {
                    c.to_string()
                };
                (*c as f64, l)
            })
            .collect(),
    );
    let (lo, hi) = (
        *counts.first().unwrap_or(&1) as f64,
        *counts.last().unwrap_or(&2) as f64,
    );
    xa.range = Some((lo / 1.3, hi * 1.3));
    let mut plot = Plot::new(
        "Expert granularity at fixed activated FLOPs",
        xa,
        Axis::linear(LOSS),
    );
    let mut table = String::from(
        "| budget C (PFLOP/s-days) | run | arch | experts | top-k | expert width | activated | total params | loss |\n\
         | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let n = groups.len();
    for (j, g) in groups.iter().enumerate() {
        let mut rs: Vec<&Run> = g.iter().map(|i| runs[*i]).collect();
        rs.sort_by(|a, b| {
            let e = |r: &Run| r.experts.filter(|_| r.is_moe()).unwrap_or(1.0);
            e(a).total_cmp(&e(b)).then(a.loss.total_cmp(&b.loss))
        });
        let c = pflops_days(mean(&rs.iter().map(|r| r.compute()).collect::<Vec<_>>()));
        let color = seq_color(j, n);
        let mut best: BTreeMap<u64, f64> = BTreeMap::new();
        for r in &rs {
            let e = r.experts.filter(|_| r.is_moe()).unwrap_or(1.0) as u64;
            let b = best.entry(e).or_insert(r.loss);
            *b = b.min(r.loss);
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |",
                sci(c),
                r.name,
                r.arch,
                if r.is_moe() {
                    opt(r.experts, |x| format!("{x}"))
                } else {
                    "dense".into()
                },
                opt(r.top_k, |x| format!("{x}")),
                opt(r.expert_width, |x| format!("{x}")),
                si(r.activated_params),
                si(r.params),
                r.loss
            );
        }
        let pts: Vec<(f64, f64)> = best.iter().map(|(e, l)| (*e as f64, *l)).collect();
        if pts.len() >= 2 {
            plot.marks.push(Mark::Line {
                pts: pts.clone(),
                color,
                width: 2,
                opacity: 1.0,
                dashed: false,
            });
        }
        plot.marks.push(Mark::Points {
            pts,
            color,
            marker: Marker::Circle,
            size: 5,
            opacity: 1.0,
        });
        plot.legend.push(LegendEntry::line_marker(
            format!("C = {} PF-days", sci(c)),
            color,
            Marker::Circle,
        ));
    }
    ctx.figure(
        "expert_granularity.svg".into(),
        Figure::single(plot),
        "loss vs number of experts at fixed activated FLOPs",
        md,
    );
    let _ =
        writeln!(
        md,
        "Lowest loss at each budget against the number of routed experts (activated FLOPs fixed \
         by the budget; finer experts are narrower){}.\n\n{table}",
        dense.map_or(String::new(), |d| format!("; E = 1 is the dense baseline `{d}`"))
    );
}

fn norm(ctx: &mut Ctx, md: &mut String, runs: &[&Run], modes: &BTreeSet<String>) {
    let mode_of = |r: &Run| {
        r.residual
            .clone()
            .or_else(|| r.axis("residual").map(str::to_string))
            .unwrap_or_default()
    };
    let color_of = |m: &str| match m {
        "prenorm" => PALETTE[0],
        "deepnorm" => PALETTE[3],
        _ => PALETTE[4 + modes.iter().position(|x| x == m).unwrap_or(0) % 5],
    };
    let any_curve = runs.iter().any(|r| r.curve.len() >= 2);
    let mut plot = Plot::new(
        "PreNorm vs DeepNorm",
        Axis::log(COMPUTE),
        Axis::log(if any_curve { LOSS_BOTH } else { LOSS }),
    );
    for m in modes {
        let color = color_of(m);
        let rs: Vec<&&Run> = runs.iter().filter(|r| &mode_of(r) == m).collect();
        for r in &rs {
            let pts: Vec<(f64, f64)> = r
                .curve
                .iter()
                .filter_map(|p| Some((pflops_days(p.flops?), p.train_loss.or(p.val_loss)?)))
                .filter(|p| p.0 > 0.0)
                .collect();
            if pts.len() >= 2 {
                plot.marks.push(Mark::Line {
                    pts,
                    color,
                    width: 2,
                    opacity: 0.8,
                    dashed: m != "prenorm" && m != "deepnorm",
                });
            }
        }
        plot.marks.push(Mark::Points {
            pts: rs.iter().map(|r| (pflops_days(r.flops), r.loss)).collect(),
            color,
            marker: Marker::Circle,
            size: 5,
            opacity: 1.0,
        });
        plot.legend
            .push(LegendEntry::line_marker(m.clone(), color, Marker::Circle));
    }
    ctx.figure(
        "norm_curves.svg".into(),
        Figure::single(plot),
        "training loss curves, PreNorm vs DeepNorm",
        md,
    );
    let _ = writeln!(
        md,
        "{}Markers: the final validation loss of each run.\n",
        if any_curve {
            "Lines: training loss against the FLOPs spent (metrics.jsonl), one per run. "
        } else {
            "No run has a loss curve (metrics.jsonl): final losses only. "
        }
    );
    let groups = ctx.budgets(runs);
    let _ = write!(md, "| budget C (PFLOP/s-days) |");
    for m in modes {
        let _ = write!(md, " {m} |");
    }
    md.push_str("\n| ---: |");
    for _ in modes {
        md.push_str(" ---: |");
    }
    md.push('\n');
    for g in &groups {
        let c = pflops_days(mean(
            &g.iter().map(|i| runs[*i].compute()).collect::<Vec<_>>(),
        ));
        let _ = write!(md, "| {} |", sci(c));
        for m in modes {
            let l = g
                .iter()
                .map(|i| runs[*i])
                .filter(|r| &mode_of(r) == m)
                .map(|r| r.loss)
                .fold(None, |a: Option<f64>, l| Some(a.map_or(l, |a| a.min(l))));
            let _ = write!(md, " {} |", opt(l, |x| format!("{x:.4}")));
        }
        md.push('\n');
    }
    md.push_str("\nLowest final validation loss per residual mode at each budget.\n\n");
}

/// 7. Every run, finished or not.
fn section_runs(ctx: &Ctx, md: &mut String) {
    md.push_str("## 7. All runs\n\n");
    let any = |f: fn(&Run) -> bool| ctx.sweep.runs.iter().any(f);
    let (has_mqar, has_niah) = (any(|r| r.mqar.is_some()), any(|r| r.niah.is_some()));
    md.push_str(
        "| run | arch | params | activated | tokens | FLOPs | C (PFLOP/s-days) | val loss |",
    );
    if has_mqar {
        md.push_str(" MQAR |");
    }
    if has_niah {
        md.push_str(" NIAH |");
    }
    md.push_str(" status |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    if has_mqar {
        md.push_str(" ---: |");
    }
    if has_niah {
        md.push_str(" ---: |");
    }
    md.push_str(" --- |\n");
    let mut lines: Vec<(u64, String)> = Vec::new();
    for r in &ctx.sweep.runs {
        let mut l = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.4} |",
            r.name,
            r.arch,
            si(r.params),
            si(r.activated_params),
            si(r.tokens),
            sci(r.flops),
            sci(pflops_days(r.flops)),
            r.loss
        );
        if has_mqar {
            let _ = write!(l, " {} |", opt(r.mqar, acc));
        }
        if has_niah {
            let _ = write!(l, " {} |", opt(r.niah, acc));
        }
        l.push_str(" ok |");
        lines.push((r.line, l));
    }
    let blanks = 6 + usize::from(has_mqar) + usize::from(has_niah);
    for k in &ctx.sweep.skipped {
        lines.push((
            k.line,
            format!(
                "| {} | {} |{} **{}** |",
                k.name,
                k.arch,
                " |".repeat(blanks),
                k.status
            ),
        ));
    }
    lines.sort_by_key(|l| l.0);
    for (_, l) in lines {
        md.push_str(&l);
        md.push('\n');
    }
    md.push('\n');
}

fn summary(ctx: &Ctx) -> String {
    let s = ctx.sweep;
    let mut out = format!(
        "report of sweep {}{}: {} finished run(s), {} left out",
        s.name,
        s.kind
            .as_deref()
            .map_or(String::new(), |k| format!(" ({k})")),
        s.runs.len(),
        s.skipped.len()
    );
    if !s.skipped.is_empty() {
        let names: Vec<String> = s
            .skipped
            .iter()
            .map(|k| format!("{} ({})", k.name, k.status))
            .collect();
        let _ = write!(out, ": {}", abbreviate(&names, 5));
    }
    out.push('\n');
    for a in &ctx.power.archs {
        match ctx.law(&a.arch, "L(C)") {
            Some(f) if f.is_fitted() => {
                let b = &f.params[1];
                let _ = writeln!(
                    out,
                    "  {}: {} (b in [{}, {}])",
                    a.arch,
                    f.formula.as_deref().unwrap_or(""),
                    num(b.lo),
                    num(b.hi)
                );
            }
            Some(f) => {
                let _ = writeln!(
                    out,
                    "  {}: L(C) not fitted: {}",
                    a.arch,
                    not_fitted_reason(f)
                );
            }
            None => {}
        }
    }
    if let Some(v) = ordering_verdict(ctx) {
        let _ = writeln!(out, "  {}", v.replace("**", ""));
    }
    if !s.notes.is_empty() {
        let _ = writeln!(
            out,
            "  {} note(s) on partial data in the report",
            s.notes.len()
        );
    }
    if !ctx.skipped.is_empty() {
        let _ = writeln!(
            out,
            "  no data for (see the report): {}",
            ctx.skipped.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(sci(1.234e-4), "1.23e-4");
        assert_eq!(sci(9.999e-5), "1.00e-4");
        assert_eq!(si(2.5e6), "2.50M");
        assert_eq!(si(120_000.0), "120.0K");
        assert_eq!(num(3.47971), "3.4797");
        assert_eq!(slug("moe-e8/top k"), "moe-e8_top_k");
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.25), 1.25);
    }

    #[test]
    fn the_papers_architectures_keep_their_colors() {
        let archs: Vec<String> = ["a", "hybrid", "lightning", "softmax", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = arch_colors(&archs);
        assert_eq!(c["softmax"], PALETTE[0]);
        assert_eq!(c["lightning"], PALETTE[1]);
        assert_eq!(c["hybrid"], PALETTE[2]);
        assert_ne!(c["a"], c["z"]);
        assert!(!archs[..1].iter().any(|a| PALETTE[..3].contains(&c[a])));
    }
}
