//! The config schema against real files: the shipped configs, and one bad file per rule.

use std::path::Path;

use scalelab_config::{AttentionKind, ConfigError, FfnKind, ModelConfig};
use scalelab_tests::{each_bad_file_is_refused, repo_root, yaml_files};

#[test]
fn minimax_text_01_matches_the_paper_counts() {
    let cfg =
        ModelConfig::from_yaml_file(repo_root().join("configs/minimax-text-01.yaml")).unwrap();
    let p = cfg.param_count();
    // Per-module numbers of reference/minimax01.md.
    assert_eq!(p.per_module.lightning_attention, 251_666_432);
    assert_eq!(p.per_module.softmax_attention, 113_246_208);
    assert_eq!(p.per_module.expert, 169_869_312);
    assert_eq!(p.per_module.router, 196_608);
    assert_eq!(p.embedding, 1_229_193_216);
    assert_eq!(p.head, 1_229_193_216);
    assert_eq!(
        (p.lightning_layers, p.softmax_layers, p.moe_layers),
        (70, 10, 80)
    );
    assert_eq!(p.lightning_attention + p.softmax_attention, 18_749_112_320);
    assert_eq!(p.experts, 434_865_438_720);
    // 456.09B total, 45.94B activated excluding embedding and head (within 0.01B).
    assert!((p.total as f64 / 1e9 - 456.09).abs() < 0.01, "{}", p.total);
    assert!(
        (p.activated as f64 / 1e9 - 45.94).abs() < 0.01,
        "{}",
        p.activated
    );
    assert!((cfg.deepnorm_alpha() - 3.5565588).abs() < 1e-6);
    let kinds = cfg.attention_kinds();
    let softmax_at: Vec<usize> = (0..80)
        .filter(|&l| kinds[l] == AttentionKind::Softmax)
        .collect();
    assert_eq!(softmax_at, (0..10).map(|i| 8 * i + 7).collect::<Vec<_>>());
}

#[test]
fn every_shipped_config_is_valid_and_round_trips() {
    let mut n = 0;
    for path in yaml_files(&repo_root().join("configs")) {
        let cfg = ModelConfig::from_yaml_file(&path)
            .unwrap_or_else(|e| panic!("{} is invalid: {e}", path.display()));
        let again = ModelConfig::from_yaml_str(&cfg.to_yaml()).unwrap();
        assert_eq!(cfg, again, "{} does not round-trip", path.display());
        n += 1;
    }
    assert!(
        n >= 10,
        "expected the scaled families in configs/, found {n} files"
    );
}

/// Each file in tests/bad/ starts with `# expect: <text>`; loading it must fail with that text on
/// the error's first line.
#[test]
fn bad_files_fail_with_errors_that_name_field_value_and_rule() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let n = each_bad_file_is_refused(&dir, true, |path| {
        ModelConfig::from_yaml_file(path)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(n >= 10, "{n}");
}

#[test]
fn missing_file_names_the_path() {
    let err = ModelConfig::from_yaml_file("does/not/exist.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("does/not/exist.yaml"));
}

fn tiny(attention: &str, ffn: &str) -> ModelConfig {
    ModelConfig::from_yaml_str(&format!(
        "vocab_size: 64\nhidden_size: 32\nlayers: 6\nattention: {attention}\nffn: {ffn}\n"
    ))
    .unwrap()
}

#[test]
fn layouts_tile_and_agree() {
    use AttentionKind::{Lightning as L, Softmax as S};
    let by_pattern = tiny("{ pattern: \"LLS\", heads: 4 }", "{ width: 64 }");
    let by_every = tiny("{ softmax_every: 3, heads: 4 }", "{ width: 64 }");
    let by_list = tiny(
        "{ kinds: [lightning, lightning, softmax, lightning, lightning, softmax], heads: 4 }",
        "{ width: 64 }",
    );
    let expected = vec![L, L, S, L, L, S];
    assert_eq!(by_pattern.attention_kinds(), expected);
    assert_eq!(by_every.attention_kinds(), expected);
    assert_eq!(by_list.attention_kinds(), expected);
    assert_eq!(
        tiny("{ softmax_every: 1, heads: 4 }", "{ width: 64 }").attention_kinds(),
        vec![S; 6]
    );
    assert_eq!(
        tiny("{ pattern: L, heads: 4 }", "{ width: 64 }").attention_kinds(),
        vec![L; 6]
    );
    // A pattern that does not divide the depth is cut at the last layer.
    assert_eq!(
        tiny("{ pattern: \"LLLS\", heads: 4 }", "{ width: 64 }").attention_kinds(),
        vec![L, L, L, S, L, L]
    );
    let mixed = tiny(
        "{ pattern: L, heads: 4 }",
        "{ pattern: DM, width: 64, moe: { experts: 4, top_k: 1, expert_width: 16 } }",
    );
    assert_eq!(mixed.ffn_kinds()[..2], [FfnKind::Dense, FfnKind::Moe]);
    let p = mixed.param_count();
    assert_eq!(p.moe_layers, 3);
    assert_eq!(p.experts, 3 * 4 * 3 * 32 * 16);
    assert_eq!(p.activated_experts, 3 * 3 * 32 * 16);
    assert_eq!(
        p.total - p.activated - p.embedding - p.head,
        p.experts - p.activated_experts
    );
}

#[test]
fn tied_embeddings_have_no_head() {
    let cfg = ModelConfig::from_yaml_str(
        "vocab_size: 64\nhidden_size: 32\nlayers: 1\ntie_embeddings: true\nattention: { pattern: S, heads: 2 }\nffn: { width: 8 }\n",
    )
    .unwrap();
    assert_eq!(cfg.param_count().head, 0);
}
