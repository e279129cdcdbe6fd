//! Section 3: the fitted laws next to the paper's Table 2, where the `L(C)` curves cross, the fits
//! that could not be made, and whether the exponents order the architectures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use scalelab_scaling::fit::LawFit;

use super::context::Ctx;
use super::format::{bound, not_fitted_reason, num, sci};

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
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
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
pub(super) fn ordering_verdict(ctx: &Ctx) -> Option<String> {
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
