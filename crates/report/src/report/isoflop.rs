//! Section 2: IsoFLOP curves per architecture and the compute-optimal allocation `N_opt(C)`,
//! `D_opt(C)`.

use std::fmt::Write as _;

use scalelab_scaling::fit::{isoflop_minimum, isoflop_parabola};

use crate::plot::{Axis, Figure, LegendEntry, LegendPos, Mark, Marker, Plot};
use crate::sweep::Run;

use super::context::{mean_compute, Ctx};
use super::format::{log_grid, sci, si, slug, x_range};
use super::style::{seq_color, COMPUTE, LOSS};

/// `(C, N_opt, D_opt)` of one budget.
type Optimum = (f64, f64, f64);

/// One budget of an IsoFLOP profile: its compute, runs, and parabola minima (or why not).
struct Profile<'r> {
    c: f64,
    runs: Vec<&'r Run>,
    parabola: Option<[f64; 3]>,
    n_opt: Result<f64, String>,
    d_opt: Result<f64, String>,
}

fn profiles<'r>(ctx: &Ctx, runs: &[&'r Run]) -> Vec<Profile<'r>> {
    ctx.budgets(runs)
        .iter()
        .map(|g| {
            let rs: Vec<&Run> = g.iter().map(|i| runs[*i]).collect();
            let c = mean_compute(rs.iter().copied());
            let loss: Vec<f64> = rs.iter().map(|r| r.row.loss).collect();
            let ln_n: Vec<f64> = rs.iter().map(|r| r.row.activated_params.ln()).collect();
            let ln_d: Vec<f64> = rs.iter().map(|r| r.row.tokens.ln()).collect();
            let few = "fewer than 4 runs (a parabola needs 4)".to_string();
            let (n_opt, d_opt, parabola) = if rs.len() < 4 {
                (Err(few.clone()), Err(few), None)
            } else {
                (
                    isoflop_minimum(&ln_n, &loss)
                        .map(f64::exp)
                        .map_err(str::to_string),
                    isoflop_minimum(&ln_d, &loss)
                        .map(f64::exp)
                        .map_err(str::to_string),
                    isoflop_parabola(&ln_n, &loss),
                )
            };
            Profile {
                c,
                runs: rs,
                parabola,
                n_opt,
                d_opt,
            }
        })
        .collect()
}

/// 2. IsoFLOP curves per architecture (loss vs parameters, one curve per budget, `N_opt`
///    marked), and the optima against compute with the fitted `N_opt(C)`, `D_opt(C)`.
pub(super) fn section(ctx: &mut Ctx, md: &mut String) {
    md.push_str("## 2. IsoFLOP curves\n\n");
    let mut any = false;
    let mut optima: Vec<(String, Vec<Optimum>)> = Vec::new();
    for arch in ctx.archs.clone() {
        let runs = ctx.runs_of(&arch);
        let profs = profiles(ctx, &runs);
        if profs.iter().all(|p| p.runs.len() < 3) {
            continue;
        }
        any = true;
        let mut plot = Plot::new(
            format!("IsoFLOP curves: {arch}"),
            Axis::log("activated parameters N (non-embedding)"),
            Axis::linear(LOSS),
        );
        let n = profs.len();
        let mut table = String::from(
            "| budget C (PFLOP/s-days) | runs | N range | N_opt | D_opt | remark |\n\
             | ---: | ---: | --- | ---: | ---: | --- |\n",
        );
        let mut best = Vec::new();
        for (j, p) in profs.iter().enumerate() {
            let color = seq_color(j, n);
            let pts: Vec<(f64, f64)> = p
                .runs
                .iter()
                .map(|r| (r.row.activated_params, r.row.loss))
                .collect();
            let (nlo, nhi) = x_range(&pts);
            plot.marks.push(Mark::Points {
                pts,
                color,
                marker: Marker::Circle,
                size: 4,
                opacity: 1.0,
            });
            if let Some(c) = p.parabola {
                plot.marks.push(Mark::Line {
                    pts: log_grid(nlo, nhi, 40)
                        .into_iter()
                        .map(|x| {
                            let l = x.ln();
                            (x, c[0] + c[1] * l + c[2] * l * l)
                        })
                        .collect(),
                    color,
                    width: 2,
                    opacity: 0.9,
                    dashed: false,
                });
                if let Ok(nopt) = p.n_opt {
                    let l = nopt.ln();
                    plot.marks.push(Mark::Points {
                        pts: vec![(nopt, c[0] + c[1] * l + c[2] * l * l)],
                        color: (20, 20, 20),
                        marker: Marker::Star,
                        size: 5,
                        opacity: 1.0,
                    });
                }
            }
            plot.legend.push(LegendEntry::line_marker(
                format!("C = {} PF-days", sci(p.c)),
                color,
                Marker::Circle,
            ));
            let remark = match (&p.n_opt, &p.d_opt) {
                (Ok(_), Ok(_)) => String::new(),
                (Err(e), _) => format!("skipped by the fit: in N {e}"),
                (_, Err(e)) => format!("skipped by the fit: in D {e}"),
            };
            if let (Ok(nopt), Ok(dopt)) = (&p.n_opt, &p.d_opt) {
                best.push((p.c, *nopt, *dopt));
            }
            let _ = writeln!(
                table,
                "| {} | {} | {} to {} | {} | {} | {} |",
                sci(p.c),
                p.runs.len(),
                si(nlo),
                si(nhi),
                p.n_opt.as_ref().map_or("".into(), |v| si(*v)),
                p.d_opt.as_ref().map_or("".into(), |v| si(*v)),
                remark
            );
        }
        if best.iter().any(|_| true) {
            plot.legend.push(LegendEntry::marker(
                "N_opt (parabola minimum)",
                (20, 20, 20),
                Marker::Star,
            ));
        }
        plot.legend_pos = LegendPos::UpperRight;
        ctx.figure(
            format!("isoflop_{}.svg", slug(&arch)),
            plot,
            &format!("IsoFLOP curves of {arch}"),
            md,
        );
        let _ = writeln!(md, "{table}");
        optima.push((arch, best));
    }
    if !any {
        ctx.skip(
            md,
            "IsoFLOP curves",
            "No architecture has several model sizes at one budget: no IsoFLOP curves.",
        );
        return;
    }
    md.push_str(
        "Each curve: the runs of one budget (compute C), loss against activated parameters, with \
         the least-squares parabola in ln N that the `isoflop` fit uses; the star is its minimum \
         N_opt. The fit skips a budget with fewer than 4 runs or whose minimum falls outside the \
         sampled sizes.\n\n",
    );
    if optima.iter().all(|(_, b)| b.is_empty()) {
        ctx.skip(
            md,
            "Optimal allocation",
            "No budget has an interior IsoFLOP minimum: no N_opt(C), D_opt(C) plot.",
        );
        return;
    }
    let mut panels = Vec::new();
    for (which, label) in [
        (1, "compute-optimal parameters N_opt"),
        (2, "compute-optimal tokens D_opt"),
    ] {
        let law = if which == 1 { "N_opt(C)" } else { "D_opt(C)" };
        let mut plot = Plot::new(law, Axis::log(COMPUTE), Axis::log(label));
        plot.legend_pos = LegendPos::UpperLeft;
        for (arch, best) in &optima {
            if best.is_empty() {
                continue;
            }
            let color = ctx.color(arch);
            let marker = ctx.marker(arch);
            let pts: Vec<(f64, f64)> = best
                .iter()
                .map(|b| (b.0, if which == 1 { b.1 } else { b.2 }))
                .collect();
            plot.marks.push(Mark::points(pts.clone(), color, marker));
            let label = match ctx.fitted(arch, law) {
                Some(f) => {
                    let (k, e) = ctx.draw_law(&mut plot, f, &pts, 40, color);
                    format!("{arch}: {} C^{e:.3}", sci(k))
                }
                None => format!("{arch} (no fit)"),
            };
            plot.legend
                .push(LegendEntry::line_marker(label, color, marker));
        }
        panels.push(plot);
    }
    ctx.figure(
        "optimal_allocation.svg",
        Figure {
            panels,
            size: (1300, 600),
        },
        "compute-optimal parameters and tokens vs compute",
        md,
    );
    md.push_str(
        "Markers: the IsoFLOP minima of each budget; lines: the fitted `N_opt(C) = k C^a` and \
         `D_opt(C) = k C^b` with their bootstrap bands (Chinchilla approach 2, as in the \
         paper).\n\n",
    );
}
