//! IsoFLOP plans from the shipped specs in experiments/plans/, and one bad spec per rule.

use std::path::Path;

use scalelab_config::ModelConfig;
use scalelab_scaling::flops::{training_flops_per_token, Convention};
use scalelab_scaling::plan::plan_from_str;
use scalelab_scaling::report::{plan_from_file, Plan};
use scalelab_tests::{each_bad_file_is_refused, repo_root};

fn plan(name: &str) -> Plan {
    plan_from_file(repo_root().join("experiments/plans").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every run spends its budget: tokens = floor(budget / FLOPs per token), so the FLOPs spent fall
/// short of the budget by less than one token's cost; FLOPs per token are the convention's.
fn check_budgets(p: &Plan) {
    for r in &p.runs {
        let fpt = training_flops_per_token(&r.config, p.seq_len, p.convention).unwrap();
        assert_eq!(r.flops_per_token, fpt, "{}", r.name);
        assert_eq!(r.tokens, (r.budget / fpt).floor() as u64, "{}", r.name);
        assert!(
            r.flops <= r.budget && r.budget - r.flops < fpt,
            "{}",
            r.name
        );
        assert!((r.pflops_days * 8.64e19 / r.flops - 1.0).abs() < 1e-12);
        let pc = r.config.param_count();
        assert_eq!(
            (r.params_total, r.params_activated),
            (pc.total, pc.activated)
        );
    }
}

#[test]
fn quick_attention_plan_follows_the_rule() {
    let p = plan("attention-isoflop-quick.yaml");
    assert_eq!(p.runs.len(), 4 * 3 * 3);
    check_budgets(&p);
    for r in &p.runs {
        let c = &r.config;
        let d = c.hidden_size;
        assert_eq!(c.attention.heads, d / 16, "{}", r.name);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(
            c.ffn.width,
            Some((2.75 * d as f64 / 16.0).round() as usize * 16)
        );
        // The tiny bases keep 2 query heads per KV head and RoPE on half of each head.
        assert_eq!(c.kv_heads(), c.attention.heads / 2);
        assert_eq!(c.rope_dims(), 8);
        assert_eq!(c.name, format!("{}-{}", r.arch, r.size));
    }
    let m = p.runs.iter().find(|r| r.name == "hybrid-l-1e13").unwrap();
    assert_eq!(m.config.ffn.width, Some(352));
    assert_eq!(m.config.attention.pattern.as_deref(), Some("LLLS"));
    let text = p.to_text();
    assert!(
        text.contains("36 runs") && text.contains("softmax-l-1e13"),
        "{text}"
    );
    assert!(text.contains("PFLOP/s-days") && text.contains("tokens/param"));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 36);
    assert_eq!(json["convention"], "exact");
}

#[test]
fn paper_plan_reproduces_the_shipped_scaling_configs() {
    let p = plan("attention-isoflop-paper.yaml");
    assert_eq!(p.runs.len(), (4 + 5 + 5 + 4 + 4) * 3);
    check_budgets(&p);
    for r in &p.runs {
        let shipped = ModelConfig::from_yaml_file(
            repo_root().join(format!("configs/scaling/{}-{}.yaml", r.arch, r.size)),
        )
        .unwrap();
        assert_eq!(r.config, shipped, "{}", r.name);
    }
    // 7B softmax at 1e22 FLOPs: about 2e11 tokens, 30 tokens per parameter.
    let r = p.runs.iter().find(|r| r.name == "softmax-7b-1e22").unwrap();
    assert!(
        r.tokens > 1.5e11 as u64 && r.tokens < 2.5e11 as u64,
        "{}",
        r.tokens
    );
}

#[test]
fn convention_changes_the_tokens_by_the_ratio_of_flops_per_token() {
    let dir = repo_root().join("experiments/plans");
    let text = std::fs::read_to_string(dir.join("attention-isoflop-quick.yaml")).unwrap();
    let exact = plan_from_str(&text, &dir, "quick").unwrap();
    let kaplan = plan_from_str(
        &text.replace("convention: exact", "convention: kaplan"),
        &dir,
        "quick",
    )
    .unwrap();
    assert_eq!(kaplan.convention, Convention::Kaplan);
    for (e, k) in exact.runs.iter().zip(&kaplan.runs) {
        assert_eq!(k.flops_per_token, 6.0 * k.params_activated as f64);
        assert!(k.flops_per_token < e.flops_per_token, "{}", e.name);
        assert!(k.tokens > e.tokens, "{}", e.name);
    }
}

#[test]
fn moe_variants_match_the_dense_activated_flops() {
    let p = plan("moe-vs-dense-quick.yaml");
    check_budgets(&p);
    assert_eq!(p.runs.len(), 2 * 5);
    // Expert width e = (W - E/3) / (top_k + shared) with W = 352, rounded to a multiple of 8.
    let want = [
        ("moe-e4-k1", 1, 352, 1.0),
        ("moe-e8-k2", 2, 176, 2.0),
        ("moe-e16-k4", 4, 88, 4.0),
        ("moe-e8-k1-shared", 1, 176, 2.0),
    ];
    assert_eq!(p.moe_matches.len(), want.len());
    for (m, (name, k, width, g)) in p.moe_matches.iter().zip(want) {
        assert_eq!(
            (m.variant.as_str(), m.top_k, m.expert_width),
            (name, k, width)
        );
        assert_eq!(m.granularity, g);
        assert!(m.relative_difference.abs() <= m.tolerance, "{m:?}");
        assert_eq!(
            m.moe_flops_per_token / m.dense_flops_per_token - 1.0,
            m.relative_difference
        );
        assert!(m.params_total > m.params_activated);
    }
    let dense = p.runs.iter().find(|r| r.arch == "dense").unwrap();
    for r in p.runs.iter().filter(|r| r.budget == dense.budget) {
        let rel = r.tokens as f64 / dense.tokens as f64 - 1.0;
        assert!(rel.abs() < 0.0102, "{}: {rel}", r.name);
    }
    assert!(p.to_text().contains("MoE vs dense"));

    let p = plan("moe-vs-dense-paper.yaml");
    check_budgets(&p);
    for m in &p.moe_matches {
        assert!(m.relative_difference.abs() <= 0.005, "{m:?}");
    }
    assert_eq!(p.moe_matches[2].top_k, 8);
}

/// Each file in tests/data/plans/ starts with `# expect: <text>`; planning it must fail with
/// that text, and the error must name the file.
#[test]
fn bad_specs_fail_naming_field_value_and_rule() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/plans");
    let n = each_bad_file_is_refused(&dir, true, |path| {
        plan_from_file(path).map(drop).map_err(|e| e.to_string())
    });
    assert!(n >= 14, "{n}");
}

#[test]
fn missing_spec_file_names_the_path() {
    let err = plan_from_file("no/such/plan.yaml").unwrap_err().to_string();
    assert!(err.contains("no/such/plan.yaml"), "{err}");
}
