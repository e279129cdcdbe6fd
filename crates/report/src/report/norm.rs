//! Section 6, continued: PreNorm vs DeepNorm, loss curves and the lowest loss per residual mode.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::plot::{Axis, LegendEntry, Mark, Marker, Plot};
use crate::sweep::Run;

use super::context::{final_loss, loss_curve, mean_compute, Ctx};
use super::format::{opt, sci};
use super::style::{COMPUTE, LOSS, LOSS_BOTH, PALETTE};

/// 6, continued. PreNorm vs DeepNorm (loss curves), when the residual mode varies in the sweep.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
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
            .filter(|r| r.record.residual.is_some())
            .collect()
    } else {
        axis_runs
    };
    let modes: BTreeSet<String> = norm_runs.iter().filter_map(|r| r.residual()).collect();
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

fn norm(ctx: &mut Ctx, md: &mut String, runs: &[&Run], modes: &BTreeSet<String>) {
    let mode_of = |r: &Run| r.residual().unwrap_or_default();
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
            let pts = loss_curve(r);
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
        plot.marks.push(Mark::points(
            rs.iter().map(|r| final_loss(r)).collect(),
            color,
            Marker::Circle,
        ));
        plot.legend
            .push(LegendEntry::line_marker(m.clone(), color, Marker::Circle));
    }
    ctx.figure(
        "norm_curves.svg",
        plot,
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
        let c = mean_compute(g.iter().map(|i| runs[*i]));
        let _ = write!(md, "| {} |", sci(c));
        for m in modes {
            let l = g
                .iter()
                .map(|i| runs[*i])
                .filter(|r| &mode_of(r) == m)
                .map(|r| r.row.loss)
                .reduce(f64::min);
            let _ = write!(md, " {} |", opt(l, |x| format!("{x:.4}")));
        }
        md.push('\n');
    }
    md.push_str("\nLowest final validation loss per residual mode at each budget.\n\n");
}
