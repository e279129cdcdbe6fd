//! The three FLOP conventions side by side for a list of configs: the table of the crate README
//! for the paper's softmax, lightning and hybrid families at 8192 context.

use std::path::Path;

use scalelab_config::{ConfigError, ModelConfig};
use serde::Serialize;

use crate::flops::{forward_flops, kaplan_flops_per_token, CoreCounting};
use crate::text::count;

/// The paper's scaling families as shipped in `configs/scaling/`, relative to the repository root.
pub const PAPER_FAMILY_CONFIGS: [&str; 18] = [
    "configs/scaling/softmax-70m.yaml",
    "configs/scaling/softmax-160m.yaml",
    "configs/scaling/softmax-410m.yaml",
    "configs/scaling/softmax-1b.yaml",
    "configs/scaling/softmax-3b.yaml",
    "configs/scaling/softmax-7b.yaml",
    "configs/scaling/lightning-70m.yaml",
    "configs/scaling/lightning-160m.yaml",
    "configs/scaling/lightning-410m.yaml",
    "configs/scaling/lightning-1b.yaml",
    "configs/scaling/lightning-3b.yaml",
    "configs/scaling/lightning-7b.yaml",
    "configs/scaling/hybrid-70m.yaml",
    "configs/scaling/hybrid-160m.yaml",
    "configs/scaling/hybrid-410m.yaml",
    "configs/scaling/hybrid-1b.yaml",
    "configs/scaling/hybrid-3b.yaml",
    "configs/scaling/hybrid-7b.yaml",
];

/// Reads the [`PAPER_FAMILY_CONFIGS`] under a repository root.
pub fn load_paper_families(repo_root: &Path) -> Result<Vec<ModelConfig>, ConfigError> {
    PAPER_FAMILY_CONFIGS
        .iter()
        .map(|p| ModelConfig::from_yaml_file(repo_root.join(p)))
        .collect()
}

/// Training FLOPs per token of one config under each convention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConventionRow {
    /// Config name.
    pub config: String,
    /// Layers `l`.
    pub layers: usize,
    /// Hidden size `d`.
    pub hidden: usize,
    /// Heads `h`.
    pub heads: usize,
    /// Non-embedding parameters (Kaplan's `N`; activated ones for MoE).
    pub non_embedding_params: u64,
    /// Exact, causal core, output head included.
    pub exact: f64,
    /// Exact, causal core, without the output head.
    pub exact_without_head: f64,
    /// Exact with the full (non-causal) core, without the head: Table 1's way of counting.
    pub exact_full_core_without_head: f64,
    /// Kaplan's `6N`.
    pub kaplan: f64,
    /// The paper's Table 1 (`None` for MoE configs).
    pub table1: Option<f64>,
}

/// One [`ConventionRow`] per config at sequence length `seq`.
pub fn convention_rows(cfgs: &[ModelConfig], seq: usize) -> Vec<ConventionRow> {
    cfgs.iter()
        .map(|cfg| {
            let causal = forward_flops(cfg, seq, CoreCounting::Causal);
            let full = forward_flops(cfg, seq, CoreCounting::Full);
            let p = cfg.param_count();
            ConventionRow {
                config: cfg.name.clone(),
                layers: cfg.layers,
                hidden: cfg.hidden_size,
                heads: cfg.attention.heads,
                non_embedding_params: p.activated,
                exact: causal.training(),
                exact_without_head: 3.0 * causal.total_without_head(),
                exact_full_core_without_head: 3.0 * full.total_without_head(),
                kaplan: kaplan_flops_per_token(&p),
                table1: crate::table1::flops_per_token(cfg, seq).ok(),
            }
        })
        .collect()
}

/// The rows as a Markdown table (training GFLOPs per token, and ratios to the exact count
/// without the head, which is what Kaplan and Table 1 leave out as well).
pub fn conventions_markdown(rows: &[ConventionRow]) -> String {
    let g = |x: f64| format!("{:.3}", x / 1e9);
    let mut out = String::from(
        "| config | l | d | h | N | exact | exact, no head | exact, no head, full core | \
         Kaplan 6N | Table 1 | 6N / exact no head | Table 1 / exact no head | \
         Table 1 / full core |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let t1 = r.table1.map_or("n/a".into(), g);
        let ratio =
            |x: Option<f64>, base: f64| x.map_or("n/a".into(), |x| format!("{:.3}", x / base));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.config,
            r.layers,
            r.hidden,
            r.heads,
            count(r.non_embedding_params as f64),
            g(r.exact),
            g(r.exact_without_head),
            g(r.exact_full_core_without_head),
            g(r.kaplan),
            t1,
            ratio(Some(r.kaplan), r.exact_without_head),
            ratio(r.table1, r.exact_without_head),
            ratio(r.table1, r.exact_full_core_without_head),
        ));
    }
    out
}
