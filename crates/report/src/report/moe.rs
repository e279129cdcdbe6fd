//! Section 5: MoE vs dense at equal FLOPs, and the dense baseline the MoE sections compare with.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::plot::{Axis, LegendEntry, LegendPos, Mark, Plot};
use crate::sweep::Run;

use super::context::{final_loss, mean_compute, Ctx};
use super::format::{opt, sci};
use super::style::{COMPUTE, LOSS};

/// 5. MoE vs dense at equal FLOPs: loss vs compute for the dense baseline and the MoE variants,
///    and the loss differences at matched budgets.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
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
        .filter(|r| archs.contains(&r.row.arch))
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
                    .filter(|r| &r.row.arch == arch)
                    .min_by(|a, b| a.row.loss.total_cmp(&b.row.loss))
                    .map(final_loss)
            })
            .collect();
        let every: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| &r.row.arch == arch)
            .map(|r| final_loss(r))
            .collect();
        plot.marks.push(Mark::faint_points(every, color, marker));
        plot.marks.push(Mark::Line {
            pts: best.clone(),
            color,
            width: 2,
            opacity: 1.0,
            dashed: arch == &dense,
        });
        plot.marks.push(Mark::points(best, color, marker));
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
        "moe_vs_dense.svg",
        plot,
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
                .filter(|r| r.row.arch == arch)
                .map(|r| r.row.loss)
                .reduce(f64::min)
        };
        let c = mean_compute(g.iter().map(|i| runs[*i]));
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
        set(|r| r.record.experts),
        set(|r| r.record.top_k),
        set(|r| r.record.expert_width),
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
pub(super) fn dense_baseline(ctx: &Ctx, moe: &[String]) -> Option<String> {
    let tol = ctx.opts.fit.budget_tolerance;
    let moe_flops: Vec<f64> = ctx
        .sweep
        .runs
        .iter()
        .filter(|r| moe.contains(&r.row.arch))
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
