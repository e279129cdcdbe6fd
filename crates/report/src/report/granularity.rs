//! Section 6: expert granularity (loss against the number of experts at fixed activated FLOPs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::plot::{Axis, LegendEntry, Mark, Marker, Plot};
use crate::sweep::Run;

use super::context::{mean_compute, Ctx};
use super::format::{opt, sci, si};
use super::style::{seq_color, LOSS};

use super::moe::dense_baseline;

/// 6. Expert granularity (loss vs expert count at fixed activated FLOPs), when it varies in the
///    sweep; PreNorm vs DeepNorm follows in [`super::norm`].
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 6. Expert granularity and normalization\n\n### Expert granularity\n\n");
    let moe: Vec<&Run> = ctx.sweep.runs.iter().filter(|r| r.is_moe()).collect();
    let counts: BTreeSet<u64> = moe
        .iter()
        .filter_map(|r| r.record.experts.map(|e| e as u64))
        .collect();
    let widths: BTreeSet<u64> = moe
        .iter()
        .filter_map(|r| r.record.expert_width.map(|e| e as u64))
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
}

fn granularity(ctx: &mut Ctx, md: &mut String, moe: &[&Run]) {
    let dense = {
        let names: Vec<String> = moe.iter().map(|r| r.row.arch.clone()).collect();
        dense_baseline(ctx, &names)
    };
    let mut runs: Vec<&Run> = moe.to_vec();
    if let Some(d) = &dense {
        runs.extend(ctx.runs_of(d));
    }
    let groups = ctx.budgets(&runs);
    let counts: BTreeSet<u64> = runs
        .iter()
        .map(|r| r.record.experts.filter(|_| r.is_moe()).unwrap_or(1.0) as u64)
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
            let e = |r: &Run| r.record.experts.filter(|_| r.is_moe()).unwrap_or(1.0);
            e(a).total_cmp(&e(b))
                .then(a.row.loss.total_cmp(&b.row.loss))
        });
        let c = mean_compute(rs.iter().copied());
        let color = seq_color(j, n);
        let mut best: BTreeMap<u64, f64> = BTreeMap::new();
        for r in &rs {
            let e = r.record.experts.filter(|_| r.is_moe()).unwrap_or(1.0) as u64;
            let b = best.entry(e).or_insert(r.row.loss);
            *b = b.min(r.row.loss);
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |",
                sci(c),
                r.row.name,
                r.row.arch,
                if r.is_moe() {
                    opt(r.record.experts, |x| format!("{x}"))
                } else {
                    "dense".into()
                },
                opt(r.record.top_k, |x| format!("{x}")),
                opt(r.record.expert_width, |x| format!("{x}")),
                si(r.row.activated_params),
                si(r.row.params),
                r.row.loss
            );
        }
        let pts: Vec<(f64, f64)> = best.iter().map(|(e, l)| (*e as f64, *l)).collect();
        if pts.len() >= 2 {
            plot.marks.push(Mark::line(pts.clone(), color));
        }
        plot.marks.push(Mark::points(pts, color, Marker::Circle));
        plot.legend.push(LegendEntry::line_marker(
            format!("C = {} PF-days", sci(c)),
            color,
            Marker::Circle,
        ));
    }
    ctx.figure(
        "expert_granularity.svg",
        plot,
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
