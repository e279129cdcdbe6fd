//! `write_report` on the fixture sweep and on broken or partial sweep directories.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use scalelab_report::{write_report, write_report_with, ReportError, ReportOptions};
use scalelab_scaling::fit::FitOptions;
use scalelab_scaling::flops::pflops_days;
use scalelab_scaling::paper::{power_law_crossing, table2_for};

use common::{files, fixture_dir, generate, sweep_with_csv};

/// The committed fixture is exactly what the generator writes (so the laws the tests rely on are
/// the ones it was made from). `SCALELAB_WRITE_FIXTURE=1` rewrites it.
#[test]
fn fixture_is_current() {
    let fixture = fixture_dir();
    if std::env::var_os("SCALELAB_WRITE_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(&fixture);
        std::fs::create_dir_all(&fixture).unwrap();
        generate(&fixture);
    }
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let (want, have) = (files(fresh.path()), files(&fixture));
    assert_eq!(
        want, have,
        "the fixture's files differ from the generator's; regenerate with \
         SCALELAB_WRITE_FIXTURE=1 cargo test -p scalelab-report --test report fixture_is_current"
    );
    for f in want {
        let (a, b) = (
            std::fs::read_to_string(fresh.path().join(&f)).unwrap(),
            std::fs::read_to_string(fixture.join(&f)).unwrap(),
        );
        assert!(
            a == b,
            "{} differs from the generator's output; regenerate",
            f.display()
        );
    }
}

/// The fixture's finished rows: `(arch, flops, loss)`, read with a plain CSV reader.
fn fixture_rows() -> Vec<(String, f64, f64)> {
    let mut r = csv::Reader::from_path(fixture_dir().join("results.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|c| c == n).unwrap();
    let (a, f, l, s) = (col("arch"), col("flops"), col("loss"), col("status"));
    r.records()
        .map(|x| x.unwrap())
        .filter(|x| &x[s] == "ok")
        .map(|x| {
            (
                x[a].to_string(),
                x[f].parse().unwrap(),
                x[l].parse().unwrap(),
            )
        })
        .collect()
}

/// `L(C) = a C^b` by least squares of `ln L` on `ln C` over the lowest loss at each budget,
/// computed here independently of the fit code (the fixture's budgets are exact, so grouping by
/// equal FLOPs within 1% is grouping by value).
fn frontier_power_law(arch: &str) -> (f64, f64) {
    let mut best: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for (a, f, l) in fixture_rows() {
        if a == arch {
            let key = (f.log10() * 50.0).round() as i64;
            let e = best.entry(key).or_insert((f, l));
            if l < e.1 {
                *e = (f, l);
            }
        }
    }
    let pts: Vec<(f64, f64)> = best
        .values()
        .map(|(f, l)| (pflops_days(*f).ln(), l.ln()))
        .collect();
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let b = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    ((my - b * mx).exp(), b)
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

fn svg_shapes(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| {
            ["path", "polyline", "polygon", "circle", "rect", "line"].contains(&n.tag_name().name())
        })
        .count()
}

#[test]
fn report_of_the_fixture_has_the_fits_the_papers_numbers_and_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let paths = write_report(&fixture_dir(), Some(out.path())).unwrap();
    let md = std::fs::read_to_string(&paths.report).unwrap();

    // The fitted laws are the fit's numbers: recomputed here by plain least squares.
    for arch in [
        "softmax",
        "lightning",
        "hybrid",
        "dense",
        "moe-e8",
        "moe-e16",
    ] {
        let (a, b) = frontier_power_law(arch);
        let law = format!("**{a:.4} C^{b:.4}**");
        assert!(md.contains(&law), "report lacks {arch}'s {law}");
        assert!(b < 0.0);
    }
    // The generating laws put hybrid lowest at the top budget: the crossing table says so.
    assert!(md.contains("| hybrid vs lightning |"), "{md}");
    // The paper's Table 2, and where its softmax and lightning curves cross.
    for arch in ["softmax", "lightning", "hybrid"] {
        let p = table2_for(arch).unwrap();
        for s in [
            format!("{:.4} C^{:.4}", p.l_a, p.l_b),
            format!("{:.2e} C^{:.4}", p.n_k, p.n_a),
            format!("{:.2e} C^{:.4}", p.d_k, p.d_b),
        ] {
            assert!(md.contains(&s), "report lacks the paper's {s}");
        }
    }
    assert!(md.contains("3.7087 C^-0.0798") && md.contains("3.70e10 C^0.4707"));
    let (s, l) = (
        table2_for("softmax").unwrap(),
        table2_for("lightning").unwrap(),
    );
    let c = power_law_crossing(s.l_a, s.l_b, l.l_a, l.l_b).unwrap();
    let e = c.log10().floor() as i32;
    assert!(
        md.contains(&format!("{:.2}e{e}", c / 10f64.powi(e))),
        "paper crossing {c}"
    );
    // N_opt(C) is fitted for the IsoFLOP architectures and shown with intervals.
    assert!(
        md.matches("k [").count() >= 6,
        "N_opt/D_opt intervals missing"
    );
    // Fits that could not be made, with the fit code's reason.
    assert!(
        md.contains("hybrid-r0.25 L(C): too few points: 2 budgets"),
        "{md}"
    );

    // The failed run is left out with a note, and listed as failed.
    assert!(md.contains(
        "run `softmax-c3e16-s5` (softmax, line 79 of results.csv) has status `failed`: skipped"
    ));
    assert!(md.contains("| softmax-c3e16-s5 | softmax |") && md.contains("**failed**"));
    assert!(paths.summary.contains("77 finished run(s), 1 left out"));
    assert!(paths.summary.contains("softmax-c3e16-s5 (failed)"));

    // Every section had data: no section note.
    assert!(!md.contains("section skipped"), "{md}");
    assert!(!paths.summary.contains("no data for"), "{}", paths.summary);

    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let figs: Vec<String> = paths.figures.iter().map(|p| name(p)).collect();
    let mut want = vec![
        "loss_vs_compute.svg",
        "isoflop_hybrid.svg",
        "isoflop_lightning.svg",
        "isoflop_softmax.svg",
        "optimal_allocation.svg",
        "retrieval_vs_softmax_fraction.svg",
        "niah_vs_context.svg",
        "niah_heatmap_dense.svg",
        "niah_heatmap_hybrid.svg",
        "niah_heatmap_hybrid-r0_25.svg",
        "niah_heatmap_hybrid-r0_5.svg",
        "niah_heatmap_lightning.svg",
        "niah_heatmap_softmax.svg",
        "moe_vs_dense.svg",
        "expert_granularity.svg",
        "norm_curves.svg",
    ];
    want.sort();
    let mut have = figs.clone();
    have.sort();
    assert_eq!(have, want);
    for p in &paths.figures {
        assert!(p.is_file());
        assert!(
            md.contains(&format!("]({})", name(p))),
            "report does not show {}",
            name(p)
        );
        assert!(svg_shapes(p) > 20, "{} draws almost nothing", name(p));
    }

    // Axis labels with units, legends, tick labels.
    let fig = |n: &str| out.path().join(n);
    let texts = svg_texts(&fig("loss_vs_compute.svg"));
    let has = |t: &[String], s: &str| t.iter().any(|x| x.contains(s));
    for s in [
        "compute C (PFLOP/s-days)",
        "validation loss (nats/token)",
        "95% bootstrap band",
        "training-loss curves",
        "1e-4",
    ] {
        assert!(has(&texts, s), "loss_vs_compute.svg lacks {s:?}: {texts:?}");
    }
    let (a, b) = frontier_power_law("hybrid");
    assert!(
        has(&texts, &format!("hybrid: L = {a:.3} C^{b:.4}")),
        "{texts:?}"
    );
    let texts = svg_texts(&fig("isoflop_hybrid.svg"));
    assert!(has(&texts, "activated parameters N (non-embedding)"));
    assert!(has(&texts, "N_opt (parabola minimum)"));
    assert!(has(&texts, "PF-days"));
    let texts = svg_texts(&fig("niah_heatmap_softmax.svg"));
    for s in [
        "context length (tokens)",
        "needle depth",
        "accuracy",
        "2048",
        "0.75",
    ] {
        assert!(has(&texts, s), "heat map lacks {s:?}: {texts:?}");
    }
    let texts = svg_texts(&fig("retrieval_vs_softmax_fraction.svg"));
    assert!(has(&texts, "softmax fraction") && has(&texts, "MQAR") && has(&texts, "NIAH"));
    let texts = svg_texts(&fig("moe_vs_dense.svg"));
    assert!(
        has(&texts, "moe-e16 (16 experts, top-4, width 48)"),
        "{texts:?}"
    );
    let texts = svg_texts(&fig("norm_curves.svg"));
    assert!(has(&texts, "prenorm") && has(&texts, "deepnorm"));
    let texts = svg_texts(&fig("expert_granularity.svg"));
    assert!(has(&texts, "1 (dense)") && has(&texts, "routed experts"));

    // MoE vs dense: the loss differences at matched budgets are the table's.
    assert!(md
        .contains("| budget C (PFLOP/s-days) | dense | moe-e16 | Δ moe-e16 | moe-e8 | Δ moe-e8 |"));
    let rows = fixture_rows();
    let loss = |arch: &str, f: f64| {
        rows.iter()
            .find(|r| r.0 == arch && (r.1 / f - 1.0).abs() < 0.01)
            .unwrap()
            .2
    };
    let (d, m) = (loss("dense", 1e16), loss("moe-e8", 1e16));
    assert!(
        md.contains(&format!("{m:.4} | {:+.4} |", m - d)),
        "Δ of moe-e8 at 1e16"
    );
}

#[test]
fn default_output_directory_is_inside_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "name,arch,params,activated_params,tokens,flops,loss\n\
               a,softmax,1e6,1e6,1e8,6e14,3.1\n\
               b,softmax,2e6,2e6,1e8,1.2e15,3.0\n";
    std::fs::write(dir.path().join("results.csv"), csv).unwrap();
    let p = write_report(dir.path(), None).unwrap();
    assert_eq!(p.dir, dir.path().join("report"));
    assert!(dir.path().join("report/report.md").is_file());
    assert!(dir.path().join("report/loss_vs_compute.svg").is_file());
    assert!(p.to_text().contains("report.md"));
}

fn err(dir: &Path) -> ReportError {
    write_report(dir, None).expect_err("a report of a broken sweep")
}

#[test]
fn a_directory_without_results_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(dir.path());
    assert!(matches!(e, ReportError::NoResults { .. }), "{e}");
    assert!(e.to_string().contains("has no results.csv"));
    let e = err(&dir.path().join("missing"));
    assert!(matches!(e, ReportError::NotADirectory { .. }), "{e}");
}

#[test]
fn malformed_results_name_the_file_line_and_column() {
    let head = "name,arch,params,activated_params,tokens,flops,loss,status\n";
    let ragged = sweep_with_csv(&format!("{head}a,softmax,1,1,1,1,3,ok\nb,softmax,1,1\n"));
    let e = err(ragged.path());
    let msg = e.to_string();
    assert!(matches!(e, ReportError::Csv { line: Some(3), .. }), "{msg}");
    assert!(msg.contains("results.csv: line 3: malformed CSV"), "{msg}");

    let bad = sweep_with_csv(&format!(
        "{head}a,softmax,1,1,1,1,3,ok\nb,softmax,1,1,1,1e15,three,ok\n"
    ));
    let msg = err(bad.path()).to_string();
    assert!(
        msg.contains("results.csv: line 3 (run `b`): column `loss` = \"three\" is not a number"),
        "{msg}"
    );

    let negative = sweep_with_csv(&format!("{head}a,softmax,1,1,1,-5,3,ok\n"));
    let msg = err(negative.path()).to_string();
    assert!(
        msg.contains("line 2 (run `a`): column `flops` = \"-5\" must be a positive"),
        "{msg}"
    );

    let probe = sweep_with_csv(
        "name,arch,params,activated_params,tokens,flops,loss,mqar\na,softmax,1,1,1,1,3,1.7\n",
    );
    let msg = err(probe.path()).to_string();
    assert!(
        msg.contains("column `mqar` = \"1.7\" must lie in [0, 1]"),
        "{msg}"
    );

    let missing = sweep_with_csv("name,arch,params,flops,loss\na,softmax,1,1,3\n");
    let e = err(missing.path());
    let msg = e.to_string();
    assert!(matches!(e, ReportError::MissingColumns { .. }));
    assert!(
        msg.contains("missing column(s) `activated_params`, `tokens`"),
        "{msg}"
    );

    let twice = sweep_with_csv(&format!(
        "{head}a,softmax,1,1,1,1,3,ok\na,softmax,1,1,1,1,3,ok\n"
    ));
    let msg = err(twice.path()).to_string();
    assert!(
        msg.contains("line 3 (run `a`): column `name`") && msg.contains("unique"),
        "{msg}"
    );
}

#[test]
fn a_sweep_whose_runs_all_failed_is_an_error() {
    let dir = sweep_with_csv(
        "name,arch,params,activated_params,tokens,flops,loss,status\n\
         a,softmax,,,,,,failed\nb,lightning,,,,,,failed\n",
    );
    let e = err(dir.path());
    assert!(
        matches!(e, ReportError::NoFinishedRuns { rows: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("no finished runs (2 row(s)"));
}

/// Failed runs, a single-run architecture, no probes, missing and malformed metrics: the report
/// is written, with notes and one-line replacements for the sections without data.
#[test]
fn partial_sweeps_get_a_report_with_notes() {
    let dir = sweep_with_csv(
        "name,arch,params,activated_params,tokens,flops,loss,status,residual\n\
         s1,softmax,1e6,1e6,1e8,6e14,3.30,ok,prenorm\n\
         s2,softmax,2e6,2e6,1e8,1.2e15,3.10,ok,prenorm\n\
         s3,softmax,4e6,4e6,1e8,2.4e15,2.95,ok,prenorm\n\
         s4,softmax,,,,,,failed,prenorm\n\
         l1,lightning,1e6,1e6,1e8,6e14,3.2,ok,prenorm\n\
         l2,lightning,,,,,,running,prenorm\n",
    );
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(runs.join("s1")).unwrap();
    std::fs::write(
        runs.join("s1/metrics.jsonl"),
        "{\"step\": 1, \"train/loss\": 5.0, \"train/flops\": 1e13}\nnot json\n\
         {\"step\": 2, \"train/loss\": 3.3, \"train/tokens\": 5e7}\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ReportOptions {
        fit: FitOptions {
            bootstrap: 50,
            ..FitOptions::default()
        },
    };
    let p = write_report_with(dir.path(), Some(out.path()), &opts).unwrap();
    let md = std::fs::read_to_string(&p.report).unwrap();
    for s in [
        "run `s4` (softmax, line 5 of results.csv) has status `failed`: skipped",
        "run `l2` (lightning, line 7 of results.csv) has status `running`: skipped",
        "3 of 4 finished runs have no metrics.jsonl (no loss curve drawn): s2, s3, l1",
        "metrics.jsonl: skipped 1 malformed line(s)",
        "lightning L(C): too few points: 1 budgets, but 2 parameters need at least 3",
        "No run has MQAR or NIAH scores",
        "No MoE runs",
        "The residual mode (column residual) does not vary",
        "fewer than two architectures have a fitted L(C) (softmax)",
    ] {
        assert!(md.contains(s), "report lacks {s:?}:\n{md}");
    }
    assert!(p.summary.contains("4 finished"), "{}", p.summary);
    assert!(
        p.summary.contains("2 left out: s4 (failed), l2 (running)"),
        "{}",
        p.summary
    );
    assert!(
        p.summary
            .contains("no data for (see the report): IsoFLOP curves, Retrieval, MoE vs dense"),
        "{}",
        p.summary
    );
    assert!(p.summary.contains("softmax: L(C) = "), "{}", p.summary);
    // The curve of s1 is drawn from both of its good lines (the second by tokens x FLOPs/token).
    let texts = svg_texts(&out.path().join("loss_vs_compute.svg"));
    assert!(texts.iter().any(|t| t == "training-loss curves"));
    assert_eq!(p.figures.len(), 1, "{:?}", p.figures);
}

/// Two architectures with `L(C) = a C^b` on five budgets: far-apart exponents are ordered,
/// equal ones (with noise) are reported as inconclusive rather than ranked.
#[test]
fn the_report_orders_architectures_only_when_their_exponents_separate() {
    let table = |b_light: f64| {
        let mut csv = String::from("name,arch,params,activated_params,tokens,flops,loss,status\n");
        for (arch, b, wiggle) in [("softmax", -0.05, 1.0), ("lightning", b_light, -1.0)] {
            for (i, c) in [1e15, 3e15, 1e16, 3e16, 1e17].iter().enumerate() {
                let pfd = c / 8.64e19;
                let noise = 1.0 + wiggle * 0.004 * [1.0, -1.0, 0.5, -0.5, 0.0][i];
                let loss = 2.0 * f64::powf(pfd, b) * noise;
                csv += &format!("{arch}{i},{arch},1e6,1e6,{},{c},{loss},ok\n", c / 6e6);
            }
        }
        csv
    };
    let opts = ReportOptions {
        fit: FitOptions {
            bootstrap: 100,
            ..FitOptions::default()
        },
    };
    let run = |csv: String| {
        let dir = sweep_with_csv(&csv);
        let out = tempfile::tempdir().unwrap();
        let p = write_report_with(dir.path(), Some(out.path()), &opts).unwrap();
        (std::fs::read_to_string(&p.report).unwrap(), p.summary)
    };
    let (md, summary) = run(table(-0.05));
    assert!(md.contains("**Inconclusive at this scale**"), "{md}");
    assert!(summary.contains("Inconclusive at this scale"), "{summary}");
    let (md, _) = run(table(-0.15));
    assert!(!md.contains("Inconclusive"), "{md}");
    assert!(md.contains("disjoint for every pair"), "{md}");
}

/// Retrieval scores within reach of a context-blind guess are marked, and when every run is
/// there the report says the runs cannot order the architectures on retrieval.
#[test]
fn retrieval_scores_at_chance_are_marked_and_not_ranked() {
    let table = |scores: [(f64, f64); 2]| {
        let mut csv = String::from(
            "name,arch,params,activated_params,tokens,flops,loss,status,softmax_fraction,\
             probe_chance,mqar,niah\n",
        );
        for (i, (arch, frac)) in [("softmax", 1.0), ("lightning", 0.0)].iter().enumerate() {
            let (mqar, niah) = scores[i];
            csv += &format!("{arch},{arch},1e6,1e6,1e8,6e14,3.0,ok,{frac},0.1,{mqar},{niah}\n");
        }
        csv
    };
    let run = |csv: String| {
        let dir = sweep_with_csv(&csv);
        let out = tempfile::tempdir().unwrap();
        let p = write_report_with(dir.path(), Some(out.path()), &ReportOptions::default()).unwrap();
        (std::fs::read_to_string(&p.report).unwrap(), p.summary)
    };
    let (md, summary) = run(table([(0.12, 0.09), (0.05, 0.19)]));
    assert!(md.contains("**At chance at this scale**"), "{md}");
    assert!(md.contains("0.120 (≈ chance)"), "{md}");
    assert!(summary.contains("retrieval at chance"), "{summary}");
    let (md, summary) = run(table([(0.95, 0.9), (0.12, 0.15)]));
    assert!(!md.contains("At chance at this scale"), "{md}");
    assert!(md.contains("1 of 2 runs score within 0.100"), "{md}");
    assert!(
        md.contains("| lightning | 0.000 | 1 | 0.120 (≈ chance) | 0.150 (≈ chance) |"),
        "{md}"
    );
    assert!(!summary.contains("retrieval at chance"), "{summary}");
    let (md, _) = run(table([(0.95, 0.9), (0.6, 0.5)]));
    assert!(
        md.contains("Every run scores more than 0.100 above"),
        "{md}"
    );
    assert!(!md.contains("≈ chance"), "{md}");
}
