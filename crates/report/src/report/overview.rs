//! The report's header (the sweep, the fit settings, notes on the data) and the summary printed
//! on the terminal.

use std::fmt::Write as _;

use crate::sweep::abbreviate;

use super::context::Ctx;
use super::format::{not_fitted_reason, num};
use super::laws::ordering_verdict;

pub(super) fn header(ctx: &Ctx) -> String {
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

pub(super) fn summary(ctx: &Ctx) -> String {
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
    if super::retrieval::all_at_chance(&s.runs) {
        out.push_str(
            "  retrieval at chance: MQAR and NIAH do not order the architectures at this scale\n",
        );
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
