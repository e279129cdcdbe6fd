//! Building the report: each section's Markdown and figures from a sweep and its fits.
//!
//! Every section works on whatever columns the sweep has and replaces itself by a one-line note
//! when its data are absent, so one code path serves every sweep kind.
//!
//! One module per section, in the report's order: [`overview`] (the header, and the terminal
//! summary), [`compute`] (1. loss vs compute), [`isoflop`] (2. IsoFLOP curves and the optimal
//! allocation), [`laws`] (3. the laws vs the paper's Table 2, crossings, the ordering verdict),
//! [`retrieval`] and [`niah`] (4. MQAR and NIAH vs the hybrid ratio and the context), [`moe`]
//! (5. MoE vs dense), [`granularity`] and [`norm`] (6. expert granularity, PreNorm vs DeepNorm),
//! [`runs`] (7. every run). They share [`context::Ctx`] (the sweep, its fits, the figures so
//! far), [`format`] (number formats, small statistics) and [`style`] (axis labels, colors).

mod compute;
mod context;
mod format;
mod granularity;
mod isoflop;
mod laws;
mod moe;
mod niah;
mod norm;
mod overview;
mod retrieval;
mod runs;
mod style;

use std::collections::BTreeSet;

use scalelab_scaling::fit::{fit_rows, Law, ResultRow};

use crate::plot::Figure;
use crate::sweep::{Run, Sweep};
use crate::{ReportError, ReportOptions};

use context::Ctx;
use style::arch_colors;

/// The report's text, its figures (file name, figure) and the terminal summary.
pub(crate) struct Built {
    pub markdown: String,
    pub figures: Vec<(String, Figure)>,
    pub summary: String,
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
        .map(|r| r.row.arch.clone())
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
    let mut md = overview::header(&ctx);
    compute::section(&mut ctx, &mut md);
    isoflop::section(&mut ctx, &mut md);
    laws::section(&mut ctx, &mut md);
    retrieval::section(&mut ctx, &mut md);
    moe::section(&mut ctx, &mut md);
    granularity::section(&mut ctx, &mut md);
    norm::section(&mut ctx, &mut md);
    runs::section(&ctx, &mut md);
    let summary = overview::summary(&ctx);
    Ok(Built {
        markdown: md,
        figures: ctx.figures,
        summary,
    })
}
