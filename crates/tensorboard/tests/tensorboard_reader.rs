//! Writes a two-run sweep with `SummaryWriter` and reads it back with the real TensorBoard
//! reader (`tests/read_events.py`, Python `tensorboard` package): scalars, histograms, text,
//! the hparams plugin data, and the HParams tab's session groups.
//!
//! Without the `tensorboard` package this test fails when `CI` is set and is skipped (with a
//! notice) otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use scalelab_tensorboard::{histogram, HParamValue, SessionStatus, SummaryWriter};
use serde_json::Value;

const PIP_HINT: &str = "python3 -m pip install tensorboard";

fn python() -> String {
    std::env::var("SCALELAB_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// `true` if the reader can run; otherwise fails under CI, or prints a notice and says `false`.
fn tensorboard_available() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import tensorboard"])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("cannot run {}: {e}", python()),
    };
    if std::env::var_os("CI").is_some() {
        panic!(
            "the Python `tensorboard` package is needed to check event files \
             (`{PIP_HINT}`; .ci/run must install it): {why}"
        );
    }
    // Written to the stderr handle, not with eprintln!, so that the test harness does not
    // swallow it for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: skipping the TensorBoard reader test: Python `tensorboard` is not importable \
         ({why}). Install it with `{PIP_HINT}`."
    );
    false
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What one run of the sweep logged, to compare with what the reader returns.
struct Run {
    name: &'static str,
    hparams: BTreeMap<String, HParamValue>,
    loss: Vec<(u64, f64)>,
    val_loss: Vec<(u64, f64)>,
    flops: Vec<(u64, f64)>,
    loads: Vec<f64>,
    config: String,
}

fn make_run(name: &'static str, lr: f64, arch: &str, moe: bool) -> Run {
    let steps = [0u64, 10, 20, 30, 40];
    let loss = steps
        .iter()
        .map(|&s| (s, 10.0 * lr * 1e3 / (1.0 + s as f64) + 0.123_456_789))
        .collect();
    let val_loss = steps
        .iter()
        .map(|&s| (s, 3.0 - s as f64 / 100.0 + lr))
        .collect();
    // Cumulative FLOPs reach 1e20: stored as float32, compared as such.
    let flops = steps.iter().map(|&s| (s, 2.5e18 * s as f64)).collect();
    let loads = (0..64)
        .map(|e| ((e * 37) % 64) as f64 / 640.0 + 0.01)
        .collect();
    Run {
        name,
        hparams: BTreeMap::from([
            ("lr".to_string(), HParamValue::from(lr)),
            ("arch".to_string(), HParamValue::from(arch)),
            ("moe".to_string(), HParamValue::from(moe)),
            ("layers".to_string(), HParamValue::from(12usize)),
        ]),
        loss,
        val_loss,
        flops,
        loads,
        config: format!("```yaml\narch: {arch}\nlr: {lr}\n```\n\n*Ünïcode* survives: λ→∞"),
    }
}

fn write_run(logdir: &Path, run: &Run) {
    let mut tb = SummaryWriter::create(logdir.join(run.name)).unwrap();
    tb.add_hparams(&run.hparams, &["loss", "val_loss"]).unwrap();
    tb.add_text("config", 0, &run.config).unwrap();
    for ((&(step, loss), &(_, val)), &(_, flops)) in
        run.loss.iter().zip(&run.val_loss).zip(&run.flops)
    {
        tb.add_scalar("loss", step, loss).unwrap();
        tb.add_scalar("val_loss", step, val).unwrap();
        tb.add_scalar("flops", step, flops).unwrap();
    }
    tb.add_histogram("moe/layer0/expert_load", 40, &run.loads)
        .unwrap();
    tb.close_session(SessionStatus::Success).unwrap();
}

fn same_hparam(got: &Value, expected: &HParamValue) -> bool {
    match expected {
        HParamValue::Number(v) => got.as_f64().is_some_and(|g| same_f64(g, *v)),
        HParamValue::String(v) => got.as_str() == Some(v.as_str()),
        HParamValue::Bool(v) => got.as_bool() == Some(*v),
    }
}

/// serde_json's default float parsing can be off by an ulp, so doubles compare to 1e-15
/// relative; float32 values compare exactly after rounding both sides to f32.
fn same_f64(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 * a.abs().max(b.abs())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn check_series(run: &Value, tag: &str, expected: &[(u64, f64)], t0: f64, t1: f64) {
    let got = run["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar series {tag}: {run}"));
    assert_eq!(got.len(), expected.len(), "{tag}");
    for (g, &(step, value)) in got.iter().zip(expected) {
        assert_eq!(g[0].as_u64(), Some(step), "{tag}");
        // simple_value is float32: exactly the f32 rounding of what was logged.
        assert_eq!(f(&g[1]) as f32, value as f32, "{tag} at step {step}");
        assert!((t0..=t1).contains(&f(&g[2])), "{tag} wall time {}", g[2]);
    }
}

#[test]
fn real_tensorboard_reads_scalars_histograms_text_and_hparams() {
    if !tensorboard_available() {
        return;
    }
    let logdir = fresh_dir("tensorboard-reader-sweep");
    let runs = [
        make_run("dense-lr1e-3", 1e-3, "dense", false),
        make_run("moe-lr3e-4", 3e-4, "moe-8x", true),
    ];
    let t0 = now() - 1.0;
    for run in &runs {
        write_run(&logdir, run);
    }
    let t1 = now() + 1.0;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_events.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&logdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read_events.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();

    for run in &runs {
        let got = &json["runs"][run.name];
        assert_eq!(got["file_version"], 2.0, "{}", run.name);

        check_series(got, "loss", &run.loss, t0, t1);
        check_series(got, "val_loss", &run.val_loss, t0, t1);
        check_series(got, "flops", &run.flops, t0, t1);

        let expected = histogram(&run.loads, 30).unwrap();
        let h = &got["histograms"]["moe/layer0/expert_load"][0];
        assert_eq!(h["step"], 40);
        assert_eq!(f(&h["num"]), 64.0);
        assert_eq!(f(&h["num"]), expected.num);
        assert!(same_f64(f(&h["sum"]), expected.sum));
        assert!(same_f64(f(&h["sum_squares"]), expected.sum_squares));
        assert!(same_f64(f(&h["min"]), 0.01));
        assert!(same_f64(f(&h["max"]), 63.0 / 640.0 + 0.01));
        let limits: Vec<f64> = h["bucket_limit"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        let counts: Vec<f64> = h["bucket"].as_array().unwrap().iter().map(f).collect();
        assert_eq!(limits.len(), expected.bucket_limit.len());
        assert!(limits
            .iter()
            .zip(&expected.bucket_limit)
            .all(|(&a, &b)| same_f64(a, b)));
        assert_eq!(counts, expected.bucket);
        // As the histogram dashboard sees it: [left, right, count] from min to max.
        let dash = got["histogram_dashboard"]["moe/layer0/expert_load"]
            .as_array()
            .unwrap();
        assert_eq!(f(&dash[0][0]) as f32, 0.01f32);
        assert_eq!(
            f(&dash[dash.len() - 1][1]) as f32,
            (63.0 / 640.0 + 0.01) as f32
        );
        assert_eq!(dash.iter().map(|b| f(&b[2])).sum::<f64>(), 64.0);

        assert_eq!(got["texts"]["config"][0][0], 0);
        assert_eq!(got["texts"]["config"][0][1], run.config.as_str());

        let hp = &got["hparams"];
        let types = &hp["experiment"]["hparams"];
        assert_eq!(types["lr"], "DATA_TYPE_FLOAT64");
        assert_eq!(types["layers"], "DATA_TYPE_FLOAT64");
        assert_eq!(types["arch"], "DATA_TYPE_STRING");
        assert_eq!(types["moe"], "DATA_TYPE_BOOL");
        assert_eq!(types.as_object().unwrap().len(), 4);
        assert_eq!(
            hp["experiment"]["metrics"],
            serde_json::json!([["", "loss"], ["", "val_loss"]])
        );
        let values = &hp["session_start"]["hparams"];
        for (name, value) in &run.hparams {
            assert!(
                same_hparam(&values[name], value),
                "{}: hparam {name} = {}, wrote {value:?}",
                run.name,
                values[name]
            );
        }
        assert!((t0..=t1).contains(&f(&hp["session_start"]["start_time_secs"])));
        assert_eq!(hp["session_end"]["status"], "STATUS_SUCCESS");
        assert!((t0..=t1).contains(&f(&hp["session_end"]["end_time_secs"])));
    }

    // The HParams tab: one session group per run, with its hparams and last metric values.
    let tab = &json["hparams_tab"];
    assert_eq!(
        tab["hparams"],
        serde_json::json!(["arch", "layers", "lr", "moe"])
    );
    assert_eq!(tab["metrics"], serde_json::json!(["loss", "val_loss"]));
    let groups = tab["session_groups"].as_array().unwrap();
    assert_eq!(groups.len(), runs.len(), "{tab}");
    for (group, run) in groups.iter().zip(&runs) {
        assert_eq!(group["sessions"][0][0], run.name);
        assert_eq!(group["sessions"][0][1], "STATUS_SUCCESS");
        for (name, value) in &run.hparams {
            assert!(
                same_hparam(&group["hparams"][name], value),
                "{}: {name}",
                run.name
            );
        }
        let (last_step, last_loss) = *run.loss.last().unwrap();
        assert_eq!(group["metrics"]["loss"][0].as_u64(), Some(last_step));
        assert_eq!(f(&group["metrics"]["loss"][1]) as f32, last_loss as f32);
        let (_, last_val) = *run.val_loss.last().unwrap();
        assert_eq!(f(&group["metrics"]["val_loss"][1]) as f32, last_val as f32);
    }

    std::fs::remove_dir_all(&logdir).unwrap();
}
