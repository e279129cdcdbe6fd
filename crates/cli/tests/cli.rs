//! The `scalelab` binary end to end: exit codes, tables, JSON, and errors a user can act on.

use std::process::Command;

fn scalelab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalelab"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run scalelab");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn params_prints_minimax_text_01_totals() {
    let (code, out, err) = scalelab(&["params", "configs/minimax-text-01.yaml"]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "456,089,655,296",
        "456.09B",
        "45.94B",
        "251,666,432",
        "113,246,208",
        "169,869,312",
    ] {
        assert!(out.contains(expected), "missing {expected} in\n{out}");
    }
}

#[test]
fn params_json_has_every_component() {
    let (code, out, err) = scalelab(&["params", "configs/minimax-text-01.yaml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 456_089_655_296u64);
    assert_eq!(v["activated"], 45_944_920_064u64);
    assert_eq!(v["per_module"]["lightning_attention"], 251_666_432u64);
    assert_eq!(v["lightning_layers"], 70);
}

#[test]
fn bad_config_exits_2_naming_file_field_and_rule() {
    let (code, out, err) = scalelab(&[
        "params",
        "crates/config/tests/bad/kv_heads_not_dividing.yaml",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("kv_heads_not_dividing.yaml"), "{err}");
    assert!(
        err.contains("heads (12) must be divisible by kv_heads (5)"),
        "{err}"
    );
    let (code, _, err) = scalelab(&["params", "no/such/file.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.yaml"), "{err}");
}

#[test]
fn flops_reports_activated_flops_and_attention_share_for_minimax() {
    let (code, out, err) = scalelab(&["flops", "configs/minimax-text-01.yaml", "--seq", "8192"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("activated training FLOPs per token"), "{out}");
    assert!(out.contains("attention / total"), "{out}");
    let (code, out, _) = scalelab(&["flops", "configs/tiny/tiny-hybrid.yaml", "--json"]);
    assert_eq!(code, 0);
    let _: serde_json::Value = serde_json::from_str(&out).unwrap();
}

/// The run names of a `plan` or `sweep --dry-run` table: the first cell of each row.
fn run_names(table: &str) -> Vec<String> {
    let rows = table.lines().skip_while(|l| !l.starts_with("run "));
    rows.skip(1)
        .map_while(|l| l.split_whitespace().next().map(str::to_string))
        .take_while(|n| n != "estimated" && n != "MoE")
        .collect()
}

#[test]
fn plan_prints_the_runs_a_dry_run_sweep_lists() {
    for file in [
        "experiments/plans/attention-isoflop-quick.yaml",
        "experiments/moe-vs-dense-quick.yaml",
    ] {
        let (code, planned, err) = scalelab(&["plan", file]);
        assert_eq!(code, 0, "{err}");
        let out = std::env::temp_dir().join(format!("scalelab-plan-{}", std::process::id()));
        let out = out.to_str().unwrap();
        let (code, dry, err) = scalelab(&["sweep", file, "--dry-run", "--out", out]);
        assert_eq!(code, 0, "{err}");
        let names = run_names(&planned);
        assert!(names.len() >= 6, "{planned}");
        assert_eq!(names, run_names(&dry), "{planned}\n{dry}");
    }
    let (code, _, err) = scalelab(&["plan", "configs/tiny/tiny-hybrid.yaml"]);
    assert_eq!(code, 2, "a model config is not a plan spec");
    assert!(err.contains("tiny-hybrid.yaml"), "{err}");
}

#[test]
fn fit_rejects_a_table_without_loss_column() {
    let dir = std::env::temp_dir().join(format!("scalelab-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("results.csv");
    std::fs::write(
        &csv,
        "name,arch,params,activated_params,tokens,flops\na,softmax,1,1,1,1\n",
    )
    .unwrap();
    let (code, _, err) = scalelab(&["fit", csv.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("loss"), "{err}");
}
