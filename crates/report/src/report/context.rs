//! What every section reads (the sweep, its fits, colors) and writes (figures, skipped
//! sections).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use scalelab_scaling::fit::{budget_groups, FitReport, LawFit, ResultRow};
use scalelab_scaling::flops::pflops_days;
use scalelab_scaling::paper::PaperLaws;

use crate::plot::{Figure, Mark, Marker, Plot, Rgb};
use crate::sweep::{Run, Sweep};
use crate::ReportOptions;

use super::format::{log_grid, mean, quantile, x_range};
use super::style::{GRAY, MARKERS};

/// The sweep, its fits and the report being built, handed from section to section.
pub(super) struct Ctx<'a> {
    /// The sweep as read.
    pub(super) sweep: &'a Sweep,
    /// The report's settings.
    pub(super) opts: &'a ReportOptions,
    /// `L(C) = a C^b` fits and crossings.
    pub(super) power: FitReport,
    /// `N_opt(C)`, `D_opt(C)` fits.
    pub(super) isoflop: FitReport,
    /// The architecture labels, sorted.
    pub(super) archs: Vec<String>,
    /// The color of each architecture, the same in every figure.
    pub(super) colors: BTreeMap<String, Rgb>,
    /// The figures so far (file name, figure), in the order the report shows them.
    pub(super) figures: Vec<(String, Figure)>,
    /// Sections left out and why (for the summary).
    pub(super) skipped: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// The finished runs of an architecture.
    pub(super) fn runs_of(&self, arch: &str) -> Vec<&'a Run> {
        self.sweep
            .runs
            .iter()
            .filter(|r| r.row.arch == arch)
            .collect()
    }

    /// The color of an architecture (gray for an unknown label).
    pub(super) fn color(&self, arch: &str) -> Rgb {
        self.colors.get(arch).copied().unwrap_or(GRAY)
    }

    /// The marker of an architecture, by its place among the labels.
    pub(super) fn marker(&self, arch: &str) -> Marker {
        let i = self.archs.iter().position(|a| a == arch).unwrap_or(0);
        MARKERS[i % MARKERS.len()]
    }

    /// The fit of law `name` (`L(C)`, `N_opt(C)`, `D_opt(C)`) for an architecture, fitted or not.
    pub(super) fn law(&self, arch: &str, name: &str) -> Option<&LawFit> {
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

    /// [`Ctx::law`], if it was fitted.
    pub(super) fn fitted(&self, arch: &str, name: &str) -> Option<&LawFit> {
        self.law(arch, name).filter(|f| f.is_fitted())
    }

    /// The paper's Table 2 laws of an architecture, if it is one of the paper's.
    pub(super) fn paper(&self, arch: &str) -> Option<PaperLaws> {
        self.power
            .archs
            .iter()
            .find(|a| a.arch == arch)
            .and_then(|a| a.paper)
    }

    /// The budgets of some runs, grouped as the fits group them.
    pub(super) fn budgets(&self, runs: &[&Run]) -> Vec<Vec<usize>> {
        let rows: Vec<ResultRow> = runs.iter().map(|r| r.result_row()).collect();
        budget_groups(&rows, self.opts.fit.budget_tolerance)
    }

    /// `(x, lower, upper)` of `k x^e` over `xs` from a law's bootstrap samples `[k, e]`.
    pub(super) fn band(&self, f: &LawFit, xs: &[f64]) -> Vec<(f64, f64, f64)> {
        let tail = (1.0 - self.opts.fit.confidence) / 2.0;
        let samples = f.bootstrap_samples();
        xs.iter()
            .map(|x| {
                let v: Vec<f64> = samples.iter().map(|s| s[0] * x.powf(s[1])).collect();
                (*x, quantile(&v, tail), quantile(&v, 1.0 - tail))
            })
            .collect()
    }

    /// Draws the fitted law `k x^e` of `f` with its bootstrap band, over the x range of `pts`
    /// widened 1.5 times each way (`n` points); returns `(k, e)`.
    pub(super) fn draw_law(
        &self,
        plot: &mut Plot,
        f: &LawFit,
        pts: &[(f64, f64)],
        n: usize,
        color: Rgb,
    ) -> (f64, f64) {
        let (lo, hi) = x_range(pts);
        let xs = log_grid(lo / 1.5, hi * 1.5, n);
        let (k, e) = (f.params[0].value, f.params[1].value);
        plot.marks.push(Mark::Band {
            pts: self.band(f, &xs),
            color,
            opacity: 0.16,
        });
        plot.marks.push(Mark::line(
            xs.iter().map(|x| (*x, k * x.powf(e))).collect(),
            color,
        ));
        (k, e)
    }

    /// Adds a figure (or a one-panel plot) and its Markdown image link.
    pub(super) fn figure(
        &mut self,
        file: impl Into<String>,
        fig: impl Into<Figure>,
        alt: &str,
        md: &mut String,
    ) {
        let file = file.into();
        let _ = writeln!(md, "![{alt}]({file})\n");
        self.figures.push((file, fig.into()));
    }

    /// Replaces a section (or part) by a one-line note, and lists it in the summary.
    pub(super) fn skip(&mut self, md: &mut String, section: &str, why: &str) {
        let _ = writeln!(md, "_{why}_\n");
        self.skipped.push(section.to_string());
    }
}

/// A run's loss curve against the compute spent (PFLOP/s-days): its training loss, else its
/// validation loss, at each logged step with a FLOP count.
pub(super) fn loss_curve(run: &Run) -> Vec<(f64, f64)> {
    run.curve
        .iter()
        .filter_map(|p| Some((pflops_days(p.flops?), p.train_loss.or(p.val_loss)?)))
        .filter(|p| p.0 > 0.0)
        .collect()
}

/// A run's final validation loss against its compute (PFLOP/s-days).
pub(super) fn final_loss(run: &Run) -> (f64, f64) {
    (pflops_days(run.row.flops), run.row.loss)
}

/// The compute of a budget group (PFLOP/s-days): the mean of its runs'.
pub(super) fn mean_compute<'r>(runs: impl IntoIterator<Item = &'r Run>) -> f64 {
    pflops_days(mean(
        &runs.into_iter().map(Run::compute).collect::<Vec<_>>(),
    ))
}
