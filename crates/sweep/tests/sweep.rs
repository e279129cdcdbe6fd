//! A tiny sweep end to end: plan, run, interrupt and resume without rerunning finished runs,
//! failures recorded, results.csv readable by the fits, a report with laws and figures; and bad
//! sweep files rejected with the run, the path and the rule.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use scalelab_sweep::{run_sweep, PlannedRun, RunOutcome, SweepError, SweepOptions, SweepSpec};

type B = Autodiff<NdArray>;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A sweep file and the runs it plans.
fn planned(path: &Path) -> (SweepSpec, Vec<PlannedRun>) {
    let spec = SweepSpec::from_yaml_file(path).unwrap();
    let runs = spec.plan(path).unwrap();
    (spec, runs)
}

/// Runs the sweep into `dir` on the default device.
fn sweep(
    spec: &SweepSpec,
    runs: &[PlannedRun],
    dir: &Path,
    opts: &SweepOptions,
    on_done: impl FnMut(&PlannedRun, &RunOutcome) + Send,
) -> Result<Vec<RunOutcome>, SweepError> {
    run_sweep::<B>(spec, runs, dir, &Default::default(), opts, on_done)
}

fn opts(stop: Option<Arc<AtomicBool>>) -> SweepOptions {
    SweepOptions {
        jobs: 2,
        progress: false,
        stop,
        cache_dir: std::env::temp_dir().join("scalelab-test-cache"),
        max_memory: None,
    }
}

#[test]
fn tiny_sweep_runs_resumes_and_reports() {
    let (spec, runs) = planned(&data("tiny.yaml"));
    assert_eq!(runs.len(), 2 * 2 * 3);
    let dir = tempfile::tempdir().unwrap();

    // Stop after the first run finishes: the others stay pending.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut o = opts(Some(stop));
    o.jobs = 1;
    let first = sweep(&spec, &runs, dir.path(), &o, |_, outcome| {
        if matches!(outcome, RunOutcome::Done(_)) {
            flag.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    let done: Vec<usize> = (0..runs.len())
        .filter(|&i| matches!(first[i], RunOutcome::Done(_)))
        .collect();
    assert_eq!(
        done.len(),
        1,
        "exactly one run should have finished before the stop"
    );
    let summary = dir
        .path()
        .join("runs")
        .join(&runs[done[0]].name)
        .join("summary.json");
    let written = std::fs::metadata(&summary).unwrap().modified().unwrap();

    // Rerun: the finished run is skipped, the rest complete.
    let mut reran = Vec::new();
    let all = sweep(&spec, &runs, dir.path(), &opts(None), |run, _| {
        reran.push(run.name.clone());
    })
    .unwrap();
    assert!(all.iter().all(|o| matches!(o, RunOutcome::Done(_))));
    assert!(
        !reran.contains(&runs[done[0]].name),
        "the finished run was trained again"
    );
    assert_eq!(
        std::fs::metadata(&summary).unwrap().modified().unwrap(),
        written
    );

    // results.csv is what `scalelab fit` reads, with the axis values.
    let results = dir.path().join("results.csv");
    let rows = scalelab_scaling::fit::read_results(&results).unwrap();
    assert_eq!(rows.len(), 12);
    let text = std::fs::read_to_string(&results).unwrap();
    assert!(text
        .lines()
        .next()
        .unwrap()
        .contains("axis.attention.pattern"));

    // The report has the fitted laws and the figures.
    let report = scalelab_report::write_report(dir.path(), None).unwrap();
    let md = std::fs::read_to_string(&report.report).unwrap();
    assert!(md.contains("L(C)"), "{md}");
    assert!(md.contains("softmax") && md.contains("lightning"));
    assert!(report
        .figures
        .iter()
        .any(|f| f.ends_with("loss_vs_compute.svg")));
    for f in &report.figures {
        assert!(
            std::fs::metadata(f).unwrap().len() > 1000,
            "{} is empty",
            f.display()
        );
    }
}

#[test]
fn a_failing_run_is_recorded_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("diverge.yaml");
    std::fs::write(
        &spec_path,
        format!(
            "name: diverge\nbase: {}\noverrides: {{ layers: 1, hidden_size: 16, ffn.width: 32, attention.heads: 2, attention.pattern: L, attention.softmax.rope_dims: 4 }}\n\
             train: {{ batch_size: 2, seq_len: 8, warmup_steps: 0, grad_clip: 0.0, budget: {{ steps: 30 }}, probes: null, eval_batches: 1 }}\n\
             axes: {{ grid: {{ train.lr: [0.003, 1.0e9] }} }}\n",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/tiny-hybrid.yaml").display()
        ),
    )
    .unwrap();
    let (spec, runs) = planned(&spec_path);
    let out = sweep(
        &spec,
        &runs,
        &dir.path().join("sweep"),
        &opts(None),
        |_, _| {},
    )
    .unwrap();
    assert!(matches!(out[0], RunOutcome::Done(_)), "{:?}", out[0]);
    assert!(
        matches!(&out[1], RunOutcome::Failed(e) if e.contains("step")),
        "{:?}",
        out[1]
    );
    let csv = std::fs::read_to_string(dir.path().join("sweep/results.csv")).unwrap();
    assert!(csv.lines().any(|l| l.contains(",failed,")), "{csv}");
    assert!(dir
        .path()
        .join("sweep/runs")
        .join(&runs[1].name)
        .join("error.txt")
        .exists());
}

#[test]
fn a_sweep_directory_in_use_is_refused_before_anything_is_written() {
    let (spec, runs) = planned(&data("tiny.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let _held = scalelab_train::lock::DirLock::acquire(dir.path(), "sweep").unwrap();
    let err = sweep(&spec, &runs, dir.path(), &opts(None), |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sweep directory") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn bad_sweep_files_name_the_run_the_path_and_the_rule() {
    let plan_err = |name: &str| {
        let path = data(name);
        match SweepSpec::from_yaml_file(&path) {
            Ok(spec) => spec.plan(&path).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    };
    let e = plan_err("bad_path.yaml");
    assert!(
        e.contains("run patern-S")
            && e.contains("attention.patern")
            && e.contains("unknown field `patern`"),
        "{e}"
    );
    let e = plan_err("bad_type.yaml");
    assert!(e.contains("run layers-four") && e.contains("layers"), "{e}");
    let e = plan_err("invalid_model.yaml");
    assert!(
        e.contains("run heads-5") && e.contains("attention.heads") && e.contains("divisible"),
        "{e}"
    );
    let e = plan_err("zip_lengths.yaml");
    assert!(
        e.contains("axes.zip.") && e.contains("advance together"),
        "{e}"
    );
    let e = plan_err("unknown_key.yaml");
    assert!(e.contains("unknown field `axis`"), "{e}");
}

#[test]
fn a_plan_spec_sweep_trains_the_planners_runs() {
    let (_, runs) = planned(&data("plan_sweep.yaml"));
    let plan_path = data("../../../../experiments/plans/attention-isoflop-quick.yaml");
    let plan = scalelab_scaling::plan::plan_from_file(&plan_path).unwrap();
    assert_eq!(runs.len(), 2 * plan.runs.len());
    for (p, pair) in plan.runs.iter().zip(runs.chunks(2)) {
        for (run, seed) in pair.iter().zip([0, 1]) {
            assert_eq!(run.name, format!("{}_seed{seed}", p.name));
            assert_eq!(run.arch, p.arch);
            assert_eq!(run.budget, Some(p.budget));
            assert_eq!(run.axes["size"], serde_json::json!(p.size));
            let mut model = p.config.clone();
            model.name = run.name.clone();
            assert_eq!(run.config.model, model);
            let t = &run.config.train;
            assert_eq!(
                (t.seq_len, t.flop_convention),
                (plan.seq_len, plan.convention)
            );
            assert_eq!((t.batch_size, t.seed), (4, seed));
            // The trainer spends the same budget the planner did, to within one step.
            let tokens = run.config.total_steps().unwrap() * run.config.tokens_per_step();
            assert!(tokens.abs_diff(p.tokens) <= run.config.tokens_per_step());
        }
    }

    // The plan spec itself is a sweep of its runs with default settings.
    let direct = SweepSpec::from_yaml_file(&plan_path).unwrap();
    let names: Vec<String> = direct
        .plan(&plan_path)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let planned: Vec<String> = plan.runs.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, planned);
}

#[test]
fn a_plan_spec_sweep_refuses_its_own_axes_and_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let plan = data("../../../../experiments/plans/attention-isoflop-quick.yaml");
    // The error of planning a sweep of the plan spec with `extra` added.
    let plan_err = |extra: &str| {
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            format!("name: s\nplan: {}\n{extra}\n", plan.display()),
        )
        .unwrap();
        SweepSpec::from_yaml_file(&path)
            .unwrap()
            .plan(&path)
            .unwrap_err()
            .to_string()
    };
    for (extra, field) in [
        ("budgets: [1.0e12]", "budgets"),
        ("axes: { grid: { layers: [2] } }", "axes"),
    ] {
        let e = plan_err(extra);
        assert!(e.starts_with(field) && e.contains("plan spec"), "{e}");
    }
    let e = plan_err("train: { seq_len: 99 }");
    assert!(
        e.contains("train.seq_len = 99") && e.contains("seq_len = 256"),
        "{e}"
    );
}
