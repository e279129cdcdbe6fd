//! Section 7: every run in one table, finished or not.

use std::fmt::Write as _;

use scalelab_scaling::flops::pflops_days;

use crate::sweep::Run;

use super::context::Ctx;
use super::format::{acc, opt, sci, si};

/// 7. Every run, finished or not.
pub(super) fn section(ctx: &Ctx, md: &mut String) {
    md.push_str("## 7. All runs\n\n");
    let any = |f: fn(&Run) -> bool| ctx.sweep.runs.iter().any(f);
    let (has_mqar, has_niah) = (any(|r| r.mqar().is_some()), any(|r| r.niah().is_some()));
    md.push_str(
        "| run | arch | params | activated | tokens | FLOPs | C (PFLOP/s-days) | val loss |",
    );
    if has_mqar {
        md.push_str(" MQAR |");
    }
    if has_niah {
        md.push_str(" NIAH |");
    }
    md.push_str(" status |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    if has_mqar {
        md.push_str(" ---: |");
    }
    if has_niah {
        md.push_str(" ---: |");
    }
    md.push_str(" --- |\n");
    let mut lines: Vec<(u64, String)> = Vec::new();
    for r in &ctx.sweep.runs {
        let mut l = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.4} |",
            r.row.name,
            r.row.arch,
            si(r.row.params),
            si(r.row.activated_params),
            si(r.row.tokens),
            sci(r.row.flops),
            sci(pflops_days(r.row.flops)),
            r.row.loss
        );
        if has_mqar {
            let _ = write!(l, " {} |", opt(r.mqar(), acc));
        }
        if has_niah {
            let _ = write!(l, " {} |", opt(r.niah(), acc));
        }
        l.push_str(" ok |");
        lines.push((r.row.line, l));
    }
    let blanks = 6 + usize::from(has_mqar) + usize::from(has_niah);
    for k in &ctx.sweep.skipped {
        lines.push((
            k.line,
            format!(
                "| {} | {} |{} **{}** |",
                k.name,
                k.arch,
                " |".repeat(blanks),
                k.status
            ),
        ));
    }
    lines.sort_by_key(|l| l.0);
    for (_, l) in lines {
        md.push_str(&l);
        md.push('\n');
    }
    md.push('\n');
}
