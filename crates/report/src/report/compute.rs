//! Section 1: loss vs compute, the attention-scaling comparison: each architecture's runs, its
//! compute-efficient frontier and fitted `L(C)`, over the runs' training curves.

use scalelab_scaling::flops::pflops_days;

use crate::plot::{Axis, Figure, LegendEntry, LegendPos, Mark, Plot};

use super::context::{final_loss, loss_curve, Ctx};
use super::style::{COMPUTE, GRAY, LOSS};

/// 1. Loss vs compute per architecture, the fitted `L(C) = a C^b` with bootstrap bands, and the
///    runs' training-loss curves underneath.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 1. Loss vs compute\n\n");
    let mut plot = Plot::new("Loss vs compute", Axis::log(COMPUTE), Axis::log(LOSS));
    plot.legend_pos = LegendPos::LowerLeft;
    let (mut any_band, mut any_curve) = (false, false);
    for arch in ctx.archs.clone() {
        let runs = ctx.runs_of(&arch);
        let color = ctx.color(&arch);
        let marker = ctx.marker(&arch);
        for r in &runs {
            let pts = loss_curve(r);
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
        let every: Vec<(f64, f64)> = runs.iter().map(|r| final_loss(r)).collect();
        plot.marks.push(Mark::faint_points(every, color, marker));
        let front: Vec<(f64, f64)> = ctx
            .budgets(&runs)
            .iter()
            .map(|g| {
                let best = g
                    .iter()
                    .map(|i| runs[*i])
                    .min_by(|a, b| a.row.loss.total_cmp(&b.row.loss))
                    .expect("budget groups are not empty");
                (pflops_days(best.compute()), best.row.loss)
            })
            .collect();
        plot.marks.push(Mark::points(front.clone(), color, marker));
        let label = match ctx.fitted(&arch, "L(C)") {
            Some(f) => {
                let (a, b) = ctx.draw_law(&mut plot, f, &front, 48, color);
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
        "loss_vs_compute.svg",
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
