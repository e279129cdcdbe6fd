//! Section 4, continued: NIAH accuracy against context length and the context x depth heat maps
//! of each architecture's largest run.

use std::collections::BTreeSet;

use crate::plot::{tick_label, Axis, Figure, LegendEntry, LegendPos, Mark, Plot};
use crate::sweep::Run;

use super::context::Ctx;
use super::format::{mean, slug};
use super::style::ACCURACY;

/// NIAH accuracy against context length for each architecture's largest run, and its heat map.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
    if !ctx.sweep.runs.iter().any(|r| !r.niah_cells.is_empty()) {
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
        plot.marks.push(Mark::line(pts.clone(), color));
        plot.marks.push(Mark::points(pts, color, marker));
        plot.legend.push(LegendEntry::line_marker(
            format!("{arch} ({})", run.row.name),
            color,
            marker,
        ));
        heat.push((arch, run));
    }
    ctx.figure(
        "niah_vs_context.svg",
        plot,
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
        let mut plot = Plot::new(format!("NIAH accuracy: {arch} ({})", run.row.name), xa, ya);
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
        .map(|r| r.row.flops)
        .fold(f64::NEG_INFINITY, f64::max);
    with.into_iter()
        .filter(|r| r.row.flops >= top * (1.0 - tol))
        .max_by(|a, b| a.row.activated_params.total_cmp(&b.row.activated_params))
}
