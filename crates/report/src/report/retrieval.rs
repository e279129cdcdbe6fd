//! Section 4: retrieval (MQAR, NIAH) by architecture and against the hybrid ratio (the share of
//! softmax layers); NIAH by context and depth is in [`super::niah`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::plot::{Axis, LegendEntry, LegendPos, Mark, Marker, Plot, Rgb};
use crate::sweep::{chance_margin, near_chance, Run};

use super::context::Ctx;
use super::format::{acc, mean, quantile};
use super::style::ACCURACY;

/// A retrieval probe: name, getter, color, marker.
type Probe = (&'static str, fn(&Run) -> Option<f64>, Rgb, Marker);

/// 4. Retrieval (MQAR, NIAH) vs the share of softmax layers, NIAH vs context length, and NIAH
///    heat maps (context x depth) per architecture.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 4. Retrieval: MQAR and needle-in-a-haystack\n\n");
    let runs: Vec<&Run> = ctx.sweep.runs.iter().collect();
    let probed: Vec<&Run> = runs
        .iter()
        .filter(|r| r.mqar().is_some() || r.niah().is_some())
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
        let rs: Vec<&&Run> = probed.iter().filter(|r| &r.row.arch == arch).collect();
        if rs.is_empty() {
            continue;
        }
        let chance = rs
            .iter()
            .filter_map(|r| r.record.probe_chance)
            .reduce(f64::max);
        let m = |f: fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            match (v.is_empty(), chance) {
                (true, _) => String::new(),
                (false, Some(c)) if near_chance(mean(&v), c) => {
                    format!("{} (≈ chance)", acc(mean(&v)))
                }
                (false, _) => acc(mean(&v)),
            }
        };
        let fr: BTreeSet<String> = rs
            .iter()
            .filter_map(|r| r.record.softmax_fraction.map(acc))
            .collect();
        let _ = writeln!(
            md,
            "| {arch} | {} | {} | {} | {} |",
            fr.into_iter().collect::<Vec<_>>().join(", "),
            rs.len(),
            m(|r| r.mqar()),
            m(|r| r.niah())
        );
    }
    md.push('\n');
    chance_verdict(&probed, md);

    // Scores vs softmax fraction.
    let with_fraction: Vec<&Run> = probed
        .iter()
        .filter(|r| r.record.softmax_fraction.is_some())
        .copied()
        .collect();
    let fractions: BTreeSet<u64> = with_fraction
        .iter()
        .map(|r| (r.record.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64)
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
            ("MQAR", |r| r.mqar(), (148, 103, 189), Marker::Circle),
            ("NIAH", |r| r.niah(), (214, 39, 40), Marker::Square),
        ];
        let mut rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (name, get, color, marker) in probes {
            let mut means = Vec::new();
            let mut all = Vec::new();
            for f in &fractions {
                let v: Vec<f64> = with_fraction
                    .iter()
                    .filter(|r| {
                        (r.record.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64 == *f
                    })
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
            plot.marks.push(Mark::line(means.clone(), color));
            plot.marks.push(Mark::points(means, color, marker));
            plot.legend.push(LegendEntry::line_marker(
                format!("{name} (mean; faint: single runs)"),
                color,
                marker,
            ));
        }
        for (f, cells) in &rows {
            let n = with_fraction
                .iter()
                .filter(|r| (r.record.softmax_fraction.unwrap_or(0.0) * 1e6).round() as u64 == *f)
                .count();
            let _ = writeln!(
                table,
                "| {} | {n} | {} |",
                acc(*f as f64 / 1e6),
                cells.join(" | ")
            );
        }
        ctx.figure(
            "retrieval_vs_softmax_fraction.svg",
            plot,
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

    super::niah::section(ctx, md);
}

/// Says whether the retrieval scores rise above a context-blind guess; where none does, the
/// runs are too small to order the architectures on retrieval, and the report says so.
fn chance_verdict(probed: &[&Run], md: &mut String) {
    let Some(chance) = probed
        .iter()
        .filter_map(|r| r.record.probe_chance)
        .reduce(f64::max)
    else {
        return;
    };
    let (at, judged) = at_chance(probed.iter().copied());
    let (margin, chance) = (acc(chance_margin(chance)), acc(chance));
    let _ = if at == judged {
        writeln!(
            md,
            "**At chance at this scale**: every run's MQAR and NIAH scores are within {margin} \
             of a context-blind guess ({chance}), so these runs do not order the architectures \
             on retrieval, and the figures below show noise. Retrieval separates them only in \
             larger or longer-trained models.\n"
        )
    } else if at > 0 {
        writeln!(
            md,
            "{at} of {judged} runs score within {margin} of a context-blind guess ({chance}); their \
             scores (marked ≈ chance where a mean is) order nothing.\n"
        )
    } else {
        writeln!(
            md,
            "Every run scores more than {margin} above a context-blind guess ({chance}).\n"
        )
    };
}

/// How many runs are at chance, of those with retrieval scores and a recorded chance.
fn at_chance<'a>(runs: impl Iterator<Item = &'a Run>) -> (usize, usize) {
    runs.filter_map(Run::retrieval_at_chance)
        .fold((0, 0), |(at, judged), v| (at + usize::from(v), judged + 1))
}

/// Whether some run has retrieval scores and a recorded chance, and every such run is at chance.
pub(super) fn all_at_chance(runs: &[Run]) -> bool {
    let (at, judged) = at_chance(runs.iter());
    judged > 0 && at == judged
}
