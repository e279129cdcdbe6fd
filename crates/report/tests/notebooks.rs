//! The notebooks in `notebooks/` execute headless on the fixture sweep, save their figures, and
//! fit the same `L(C) = a C^b` as `scalelab_scaling`.
//!
//! They need Python with the packages of `notebooks/requirements.txt`. Without them the test is
//! skipped with a notice, except under CI (env `CI` set), where it fails with the pip line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use scalelab_report::read_sweep;
use scalelab_scaling::fit::{fit_rows, FitOptions, Law};

const PIP: &str = "python3 -m pip install -r notebooks/requirements.txt";
const MODULES: &str = "numpy, pandas, matplotlib, nbformat, nbclient, nbconvert, ipykernel";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the notebooks can run here; under CI a missing package is a failure.
fn python_ready() -> bool {
    let probe = Command::new(python())
        .args(["-c", &format!("import {MODULES}")])
        .output();
    let ready = matches!(&probe, Ok(o) if o.status.success());
    if !ready {
        let why = match &probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("cannot run {}: {e}", python()),
        };
        if std::env::var_os("CI").is_some() {
            panic!(
                "the notebook test needs Python with {MODULES} ({why}); install them in .ci/run \
                 before cargo test, from the repository root: {PIP}"
            );
        }
        eprintln!("notice: notebooks not executed ({why}); to run this test: {PIP}");
    }
    ready
}

/// Executes one notebook on the fixture; returns the executed notebook (JSON).
fn execute(notebook: &str, figures: &Path) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let path = repo_root().join("notebooks").join(notebook);
    let run = Command::new(python())
        .args([
            "-m",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=300",
        ])
        .arg("--output-dir")
        .arg(out.path())
        .arg(&path)
        .env("SCALELAB_SWEEP", common::fixture_dir())
        .env("SCALELAB_NOTEBOOK_OUT", figures)
        .env("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        .output()
        .expect("run nbconvert");
    assert!(
        run.status.success(),
        "{notebook} failed to execute:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.path().join(notebook)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Outputs of the executed code cells: every cell ran, none raised, and the number of images.
fn check_outputs(notebook: &str, nb: &serde_json::Value) -> usize {
    let cells = nb["cells"].as_array().unwrap();
    let mut images = 0;
    for (i, c) in cells.iter().enumerate() {
        if c["cell_type"] != "code" {
            continue;
        }
        assert!(
            c["execution_count"].is_u64(),
            "{notebook}: code cell {i} did not run"
        );
        for o in c["outputs"].as_array().unwrap() {
            assert_ne!(
                o["output_type"], "error",
                "{notebook}: cell {i} raised {}: {}",
                o["ename"], o["evalue"]
            );
            if o["data"].get("image/png").is_some() {
                images += 1;
            }
        }
    }
    images
}

#[test]
fn notebooks_execute_on_the_fixture_and_fit_the_same_laws() {
    if !python_ready() {
        return;
    }
    let figures = tempfile::tempdir().unwrap();
    let nb = execute("scaling_laws.ipynb", figures.path());
    assert_eq!(check_outputs("scaling_laws.ipynb", &nb), 3, "plots shown");
    let nb = execute("training_curves.ipynb", figures.path());
    assert_eq!(
        check_outputs("training_curves.ipynb", &nb),
        4,
        "plots shown"
    );
    for f in [
        "loss_vs_compute.png",
        "isoflop_curves.png",
        "retrieval_vs_softmax_fraction.png",
        "training_curves.png",
        "loss_vs_step.png",
        "learning_rate.png",
        "norm_curves.png",
    ] {
        let p = figures.path().join(f);
        let bytes = std::fs::read(&p).unwrap_or_else(|_| panic!("{f} was not saved"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{f} is not a plot"
        );
    }

    // The notebook's power laws are the fit code's, architecture by architecture.
    let laws: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(figures.path().join("power_laws.json")).unwrap(),
    )
    .unwrap();
    let sweep = read_sweep(&common::fixture_dir()).unwrap();
    let rows: Vec<_> = sweep.runs.iter().map(|r| r.result_row()).collect();
    let fit = fit_rows(&rows, Law::Power, &FitOptions::default(), "fixture").unwrap();
    let fitted: Vec<_> = fit
        .archs
        .iter()
        .filter_map(|a| a.fits[0].is_fitted().then_some((&a.arch, &a.fits[0])))
        .collect();
    assert_eq!(fitted.len(), laws.as_object().unwrap().len());
    for (arch, f) in fitted {
        let (a, b) = (f.params[0].value, f.params[1].value);
        let nb_a = laws[arch]["a"].as_f64().unwrap();
        let nb_b = laws[arch]["b"].as_f64().unwrap();
        assert!(
            (nb_a / a - 1.0).abs() < 1e-9 && (nb_b - b).abs() < 1e-9,
            "{arch}: notebook {nb_a} C^{nb_b}, fit {a} C^{b}"
        );
    }
}
