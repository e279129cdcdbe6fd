//! FLOP accounting against hand computations, the parameter counts of `scalelab-config`, the
//! paper's Table 1, and the README's table.

use std::path::Path;

use scalelab_config::ModelConfig;
use scalelab_scaling::compare::{convention_rows, conventions_markdown, load_paper_families};
use scalelab_scaling::flops::{
    forward_flops, lightning_span, softmax_span, training_flops_per_token, Convention, CoreCounting,
};
use scalelab_scaling::report::{flops_json, flops_text};
use scalelab_scaling::table1;
use scalelab_tests::repo_root;

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-300)
}

#[test]
fn causal_spans() {
    // Positions 1..=6 meet 1..=6 keys: mean 3.5.
    assert_eq!(softmax_span(6, CoreCounting::Causal), 3.5);
    assert_eq!(softmax_span(6, CoreCounting::Full), 6.0);
    // Blocks of 4 over 6 tokens: a full block (1+2+3+4) and a partial one (1+2).
    assert_eq!(lightning_span(6, 4, CoreCounting::Causal), 13.0 / 6.0);
    assert_eq!(lightning_span(6, 4, CoreCounting::Full), (16.0 + 4.0) / 6.0);
    assert_eq!(lightning_span(8, 4, CoreCounting::Causal), 2.5);
}

/// Two layers, one lightning and one softmax, dense FFN, every product written out.
#[test]
fn tiny_hybrid_matches_the_hand_count() {
    let cfg = ModelConfig::from_yaml_str(
        "vocab_size: 10\nhidden_size: 8\nlayers: 2\n\
         attention: { pattern: LS, heads: 2, lightning: { block_size: 4 }, \
         softmax: { kv_heads: 1, rope_dims: 2 } }\nffn: { width: 16 }\n",
    )
    .unwrap();
    // d = 8, heads 2 x head_dim 4, w = 8, kv width 4, V = 10, B = 4, T = 6.
    let f = forward_flops(&cfg, 6, CoreCounting::Causal);
    assert_eq!(f.embedding, 0.0);
    assert_eq!(f.head, 2.0 * 8.0 * 10.0); // 160
    assert_eq!(
        f.lightning_projections,
        2.0 * 8.0 * 24.0 + 2.0 * 8.0 * 8.0 + 2.0 * 8.0 * 8.0
    ); // 640
       // Intra: 13 key visits over 6 tokens (see causal_spans), QK^T and PV each 2 * keys * w.
    assert!(close(
        f.lightning_intra,
        2.0 * 2.0 * 13.0 * 8.0 / 6.0,
        1e-12
    ));
    // Inter: q * KV (2 * 4 * 8) and K^T V (2 * 4 * 8).
    assert_eq!(f.lightning_inter, 128.0);
    // q 2*8*8, k and v 2*8*4 each, out 2*8*8.
    assert_eq!(f.softmax_projections, 128.0 + 64.0 + 64.0 + 128.0);
    // Mean 3.5 keys per query, QK^T and PV.
    assert_eq!(f.softmax_core, 2.0 * 2.0 * 3.5 * 8.0); // 112
    assert_eq!(f.dense_ffn, 2.0 * 3.0 * 2.0 * 8.0 * 16.0); // 1536
    assert_eq!(f.router + f.routed_experts + f.shared_experts, 0.0);
    assert!(close(f.total, 2960.0 + 416.0 / 6.0, 1e-12), "{}", f.total);
    assert!(close(f.training(), 3.0 * f.total, 1e-15));

    let full = forward_flops(&cfg, 6, CoreCounting::Full);
    assert!(close(full.lightning_intra, 4.0 * 20.0 * 8.0 / 6.0, 1e-12));
    assert_eq!(full.softmax_core, 4.0 * 6.0 * 8.0);
    assert_eq!(full.lightning_inter, f.lightning_inter);
}

#[test]
fn tiny_moe_matches_the_hand_count() {
    let cfg = ModelConfig::from_yaml_str(
        "vocab_size: 10\nhidden_size: 8\nlayers: 1\nattention: { pattern: S, heads: 2 }\n\
         ffn: { moe: { experts: 4, top_k: 2, expert_width: 6, shared_experts: 1 } }\n",
    )
    .unwrap();
    let f = forward_flops(&cfg, 3, CoreCounting::Causal);
    assert_eq!(f.softmax_projections, 4.0 * 2.0 * 8.0 * 8.0); // MHA: q, k, v, out all 8x8
    assert_eq!(f.softmax_core, 2.0 * 2.0 * 2.0 * 8.0); // mean (3+1)/2 = 2 keys
    assert_eq!(f.router, 2.0 * 8.0 * 4.0);
    assert_eq!(f.routed_experts, 2.0 * 3.0 * 2.0 * 8.0 * 6.0); // top-2
    assert_eq!(f.shared_experts, 3.0 * 2.0 * 8.0 * 6.0);
    assert_eq!(f.dense_ffn, 0.0);
    assert_eq!(f.total, 160.0 + 512.0 + 64.0 + 64.0 + 576.0 + 288.0);
    assert_eq!(
        training_flops_per_token(&cfg, 3, Convention::Kaplan).unwrap(),
        6.0 * cfg.param_count().activated as f64
    );
    assert!(training_flops_per_token(&cfg, 3, Convention::Table1)
        .unwrap_err()
        .to_string()
        .contains("use convention exact or kaplan"));
}

fn shipped_configs() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    let mut dirs = vec![repo_root().join("configs")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(ModelConfig::from_yaml_file(&p).unwrap());
            }
        }
    }
    assert!(out.len() >= 25, "{}", out.len());
    out
}

/// Every weight matrix a token passes through costs 2 FLOPs per parameter, so the matmul count
/// without the attention core is twice the activated parameters that are matrices (all but the
/// norms), plus the head (which for tied embeddings is the embedding matrix).
#[test]
fn projection_flops_are_twice_the_activated_matrix_params() {
    for cfg in shipped_configs() {
        let p = cfg.param_count();
        let f = forward_flops(&cfg, 1024, CoreCounting::Causal);
        let norm_params = p.norms + p.lightning_layers as u64 * cfg.attention_width() as u64;
        let matrices = (p.activated - norm_params) as f64;
        assert_eq!(
            f.total - f.attention_core(),
            2.0 * matrices + 2.0 * p.embedding as f64,
            "{}",
            cfg.name
        );
    }
}

#[test]
fn minimax_text_01_at_8192() {
    let cfg =
        ModelConfig::from_yaml_file(repo_root().join("configs/minimax-text-01.yaml")).unwrap();
    let r = flops_json(&cfg, 8192);
    let (d, w, hd, v) = (6144.0, 8192.0, 128.0, 200_064.0);
    let ew = 9216.0;
    let lightning = 2.0 * d * 4.0 * w + 2.0 * w * d // qkv + gate, out
        + 4.0 * (257.0 / 2.0) * w // intra, B = 256 divides 8192
        + 4.0 * hd * w; // inter
    let softmax = 2.0 * (d * w + 2.0 * d * 1024.0 + w * d) + 4.0 * (8193.0 / 2.0) * w;
    let moe = 2.0 * d * 32.0 + 2.0 * 6.0 * d * ew;
    let want = 2.0 * d * v + 70.0 * lightning + 10.0 * softmax + 80.0 * moe;
    assert!(
        close(r.forward.total, want, 1e-12),
        "{} vs {want}",
        r.forward.total
    );
    assert!(close(r.training_per_token, 3.0 * want, 1e-12));
    // Kaplan's 6N with the paper's 45.94B activated parameters.
    assert!(close(
        r.conventions[1].training_flops_per_token.unwrap(),
        6.0 * 45.94e9,
        1e-3
    ));
    let core = 70.0 * (4.0 * 128.5 * w + 4.0 * hd * w) + 10.0 * 4.0 * 4096.5 * w;
    assert!(close(r.attention_core_share, core / want, 1e-12));
    let text = flops_text(&cfg, 8192);
    for needle in [
        "activated training FLOPs per token (3 x forward): 2.888e11",
        "attention / total: 2.01% core only, 40.95% with projections",
        "n/a: the table1 convention has no term for MoE layers",
        "PFLOP/s-days",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

/// A softmax model built the way Table 1 assumes: MHA, head_dim = d / h, SwiGLU of width 8d/3
/// (8 d^2 parameters), so 12 d^2 per layer. Table 1 counts every one of the n keys; with the
/// full core and without the head, the exact count is then Table 1 minus its `5/(18d)` term,
/// which has no matmul behind it: the tolerance is that term (3.6e-4 at d = 768).
fn table1_model(pattern: &str, layers: usize, block: usize) -> ModelConfig {
    ModelConfig::from_yaml_str(&format!(
        "vocab_size: 1000\nhidden_size: 768\nlayers: {layers}\n\
         attention: {{ pattern: {pattern}, heads: 12, lightning: {{ block_size: {block} }} }}\n\
         ffn: {{ width: 2048 }}\n"
    ))
    .unwrap()
}

#[test]
fn table1_params_match_the_exact_count_for_conforming_configs() {
    let cfg = table1_model("S", 8, 64);
    let p = cfg.param_count();
    let (l, d, h) = (8.0, 768.0, 12.0);
    assert_eq!(
        (p.non_embedding() - p.norms) as f64,
        table1::softmax_params(l, d)
    );
    // Our lightning layer has a d x w output gate and a norm over w that Table 1 does not have;
    // Table 1 has 2 d^2 / h per layer that our layer does not.
    let cfg = table1_model("L", 8, 64);
    let p = cfg.param_count();
    let ours = (p.non_embedding() - p.norms) as f64;
    let gate_and_norm = l * (d * d + d);
    assert_eq!(
        ours - gate_and_norm + l * 2.0 * d * d / h,
        table1::lightning_params(l, d, h)
    );
}

#[test]
fn table1_softmax_agrees_with_the_full_core_exact_count() {
    let n = 8192;
    let cfg = table1_model("S", 8, 64);
    let (l, d) = (8.0, 768.0);
    let t1 = table1::softmax_flops(1.0, n as f64, l, d) / n as f64;
    let full = 3.0 * forward_flops(&cfg, n, CoreCounting::Full).total_without_head();
    let dropped = 5.0 / (18.0 * d);
    let rel = t1 / full - 1.0;
    assert!(
        rel > 0.0 && rel <= dropped * 1.0001,
        "relative difference {rel}, bound {dropped}"
    );
    // Causal counting halves the core (n keys -> (n+1)/2): 6 l d (n - 1) fewer training FLOPs.
    let causal = 3.0 * forward_flops(&cfg, n, CoreCounting::Causal).total_without_head();
    assert!(close(full - causal, 6.0 * l * d * (n as f64 - 1.0), 1e-12));
    assert_eq!(
        training_flops_per_token(&cfg, n, Convention::Table1).unwrap(),
        t1
    );
}

/// Lightning with block size B = d / h = 64 and the full intra-block count: Table 1's extra
/// `36 l d^2 / h` is `6 x` its extra parameters (`2 l d^2 / h`) plus `3 x` our core
/// (`4 B d + 4 (d/h) d` per layer forward). What remains is our output gate (`6 d^2` per
/// layer), which Table 1 lacks, and the `5/(18d)` term.
#[test]
fn table1_lightning_and_hybrid_agree_up_to_the_gate() {
    let n = 8192;
    let (d, h) = (768.0, 12.0);
    for (pattern, l) in [("L", 8usize), ("LLLLLLLS", 16)] {
        let cfg = table1_model(pattern, l, 64);
        let lf = l as f64;
        let nl = cfg.param_count().lightning_layers as f64;
        let t1 = if pattern == "L" {
            table1::lightning_flops(1.0, n as f64, lf, d, h)
        } else {
            table1::hybrid_flops(1.0, n as f64, lf, d, h)
        } / n as f64;
        assert!(close(
            training_flops_per_token(&cfg, n, Convention::Table1).unwrap(),
            t1,
            1e-12
        ));
        let exact = 3.0 * forward_flops(&cfg, n, CoreCounting::Full).total_without_head();
        let gate = nl * 6.0 * d * d;
        let t1_extra_params = nl * 6.0 * 2.0 * d * d / h;
        let rel = (t1 - (exact - gate + t1_extra_params)) / t1;
        let dropped = 5.0 / (18.0 * d);
        assert!(
            rel > 0.0 && rel <= dropped * 1.0001,
            "{pattern}: {rel} vs {dropped}"
        );
        // The gate is no lower-order term: left in, it puts the exact count 4-9% above Table 1
        // (6 / 72 of a lightning layer's projections and FFN).
        let gap = exact / t1 - 1.0;
        assert!(gap > 0.04 && gap < 0.09, "{pattern}: {gap}");
    }
}

#[test]
fn table1_hybrid_row_is_one_softmax_layer_in_eight() {
    let (b, n, l, d, h) = (2.0, 4096.0, 16.0, 1024.0, 16.0);
    let mix =
        (table1::softmax_flops(b, n, l, d) + 7.0 * table1::lightning_flops(b, n, l, d, h)) / 8.0;
    assert!(close(table1::hybrid_flops(b, n, l, d, h), mix, 1e-12));
    let mix = (table1::softmax_params(l, d) + 7.0 * table1::lightning_params(l, d, h)) / 8.0;
    assert!(close(table1::hybrid_params(l, d, h), mix, 1e-12));
}

/// The README's side-by-side table is this function's output, so it cannot go stale.
#[test]
fn readme_table_of_the_paper_families_is_current() {
    let fams = load_paper_families(&repo_root()).unwrap();
    let rows = convention_rows(&fams, 8192);
    let table = conventions_markdown(&rows);
    println!("training GFLOPs per token at 8192 context:\n{table}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "crates/scaling/README.md lacks the current table; replace it with:\n{table}"
    );
    for r in &rows {
        // Table 1 counts all n keys: against the full-core exact count it is within the 8d/3
        // rounding of the shipped FFN widths (softmax) or the gate's share (lightning, hybrid).
        let ratio = r.table1.unwrap() / r.exact_full_core_without_head;
        let want = if r.config.starts_with("softmax") {
            (0.995, 1.005)
        } else {
            (0.92, 0.975)
        };
        assert!(ratio > want.0 && ratio < want.1, "{}: {ratio}", r.config);
        // Kaplan ignores the core: always below the exact count without the head.
        assert!(r.kaplan < r.exact_without_head, "{}", r.config);
    }
}
