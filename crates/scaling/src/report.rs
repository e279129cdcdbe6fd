//! The command-line face of the crate: one text function and one serde-serializable struct per
//! `scalelab` command, so the CLI only parses arguments and prints.
//!
//! | command | text | `--json` |
//! | --- | --- | --- |
//! | `scalelab flops CONFIG [--seq N]` | [`flops_text`] | [`flops_json`] -> [`FlopsReport`] |
//! | `scalelab plan SPEC.yaml` | [`plan_from_file`] then [`Plan::to_text`] | the [`Plan`] itself |
//! | `scalelab fit RESULTS.csv [--law L]` | [`fit_from_csv`] then [`FitReport::to_text`] | the [`FitReport`] itself |
//!
//! `--law` takes the names of [`Law`] (`Law::from_str`, listed in [`Law::NAMES`]); `--seq`
//! defaults to [`DEFAULT_SEQ`].

use scalelab_config::{FfnKind, ModelConfig, ParamCount};
use serde::Serialize;

pub use crate::fit::{fit_from_csv, fit_from_csv_with, FitError, FitOptions, FitReport, Law};
pub use crate::plan::{plan_from_file, Plan, PlanError};

use crate::flops::{
    forward_flops, kaplan_flops_per_token, pflops_days, Convention, CoreCounting, ForwardFlops,
    TRAINING_MULTIPLIER,
};
use crate::text::{count, pct, sci, Table};

/// The sequence length `scalelab flops` uses without `--seq`: the paper's 8192.
pub const DEFAULT_SEQ: usize = 8192;

/// Tokens used for the "compute for N tokens" line of the flops report.
pub const REPORT_TOKENS: f64 = 1e12;

/// Training FLOPs per token of one config under one convention, with its ratio to the exact
/// count (`None` where the convention cannot count the config, with the reason in `note`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConventionValue {
    /// The convention.
    pub convention: Convention,
    /// Training FLOPs per token.
    pub training_flops_per_token: Option<f64>,
    /// `training_flops_per_token` over the exact count.
    pub ratio_to_exact: Option<f64>,
    /// What the number includes, or why there is none.
    pub note: String,
}

/// `scalelab flops CONFIG --json`: the whole accounting of one config at one sequence length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlopsReport {
    /// The config's name.
    pub config: String,
    /// Sequence length the attention core is averaged over.
    pub seq: usize,
    /// Parameter counts (from `scalelab-config`).
    pub params: ParamCount,
    /// Forward matmul FLOPs per token by component, causal attention core.
    pub forward: ForwardFlops,
    /// Forward total with the full (non-causal) attention core, as Table 1 and unmasked kernels
    /// count it.
    pub forward_full_core: f64,
    /// Activated training FLOPs per token (exact, `3 x forward`): MoE layers count their
    /// `top_k` routed experts and the shared ones.
    pub training_per_token: f64,
    /// For MoE models, the training FLOPs per token if every routed expert ran on every token.
    pub all_experts_training_per_token: Option<f64>,
    /// Attention core over the forward total.
    pub attention_core_share: f64,
    /// Attention core plus attention projections over the forward total.
    pub attention_share: f64,
    /// Elementwise op count over the forward matmul total.
    pub elementwise_ratio: f64,
    /// The three conventions side by side.
    pub conventions: Vec<ConventionValue>,
    /// Training compute for [`REPORT_TOKENS`] tokens, in FLOPs.
    pub report_tokens_flops: f64,
    /// The same in PFLOP/s-days.
    pub report_tokens_pflops_days: f64,
}

/// The accounting behind `scalelab flops CONFIG --seq N --json` (a valid config; `seq` 0 counts
/// no attention core).
pub fn flops_json(cfg: &ModelConfig, seq: usize) -> FlopsReport {
    let params = cfg.param_count();
    let forward = forward_flops(cfg, seq, CoreCounting::Causal);
    let full = forward_flops(cfg, seq, CoreCounting::Full);
    let exact = forward.training();
    let all_experts_training_per_token = cfg.ffn.moe.as_ref().map(|m| {
        let moe_layers = cfg
            .ffn_kinds()
            .iter()
            .filter(|k| **k == FfnKind::Moe)
            .count() as f64;
        let unrouted =
            (m.experts - m.top_k) as f64 * 6.0 * (cfg.hidden_size * m.expert_width) as f64;
        exact + TRAINING_MULTIPLIER * moe_layers * unrouted
    });
    let kaplan = kaplan_flops_per_token(&params);
    let table1 = crate::table1::flops_per_token(cfg, seq);
    let conventions = vec![
        ConventionValue {
            convention: Convention::Exact,
            training_flops_per_token: Some(exact),
            ratio_to_exact: Some(1.0),
            note: "3 x forward 2mnk matmuls, causal attention core, output head included".into(),
        },
        ConventionValue {
            convention: Convention::Kaplan,
            training_flops_per_token: Some(kaplan),
            ratio_to_exact: Some(kaplan / exact),
            note: "6 N, N = activated non-embedding parameters; no attention core, no head".into(),
        },
        match table1 {
            Ok(t) => ConventionValue {
                convention: Convention::Table1,
                training_flops_per_token: Some(t),
                ratio_to_exact: Some(t / exact),
                note: "paper Table 1 per layer kind with l, d = hidden_size, h = heads; \
                       full n keys per query; no head"
                    .into(),
            },
            Err(e) => ConventionValue {
                convention: Convention::Table1,
                training_flops_per_token: None,
                ratio_to_exact: None,
                note: format!("n/a: {e}"),
            },
        },
    ];
    FlopsReport {
        config: cfg.name.clone(),
        seq,
        params,
        forward_full_core: full.total,
        training_per_token: exact,
        all_experts_training_per_token,
        attention_core_share: forward.attention_core() / forward.total,
        attention_share: forward.attention() / forward.total,
        elementwise_ratio: forward.elementwise.total / forward.total,
        conventions,
        report_tokens_flops: exact * REPORT_TOKENS,
        report_tokens_pflops_days: pflops_days(exact * REPORT_TOKENS),
        forward,
    }
}

/// The table `scalelab flops CONFIG --seq N` prints.
pub fn flops_text(cfg: &ModelConfig, seq: usize) -> String {
    flops_json(cfg, seq).to_text(cfg)
}

impl FlopsReport {
    fn to_text(&self, cfg: &ModelConfig) -> String {
        let p = &self.params;
        let f = &self.forward;
        let mut out = String::new();
        let ffn = match &cfg.ffn.moe {
            Some(m) if p.moe_layers > 0 => format!(
                "MoE in {} layers: {} experts, top-{}, expert width {}, {} shared",
                p.moe_layers, m.experts, m.top_k, m.expert_width, m.shared_experts
            ),
            _ => format!("dense SwiGLU width {}", cfg.ffn.width.unwrap_or(0)),
        };
        out.push_str(&format!(
            "{}: {} layers ({} lightning, {} softmax), d = {}, {} heads x {} (width {}), {}\n",
            if self.config.is_empty() {
                "(unnamed)"
            } else {
                &self.config
            },
            cfg.layers,
            p.lightning_layers,
            p.softmax_layers,
            cfg.hidden_size,
            cfg.attention.heads,
            cfg.head_dim(),
            cfg.attention_width(),
            ffn
        ));
        out.push_str(&format!(
            "parameters: {} total, {} activated per token (non-embedding), {} non-embedding; \
             embedding {}, head {}\n",
            count(p.total as f64),
            count(p.activated as f64),
            count(p.non_embedding() as f64),
            count(p.embedding as f64),
            count(p.head as f64),
        ));
        out.push_str(&format!(
            "sequence length {}; lightning block size {}\n\n",
            self.seq, cfg.attention.lightning.block_size
        ));
        out.push_str(
            "Forward FLOPs per token (exact: 2mnk per matmul; attention core causal, \
             (T+1)/2 keys per query on average)\n",
        );
        let mut t = Table::new(["component", "FLOPs/token", "share"]);
        let mut line = |name: String, v: f64| {
            t.row([name, sci(v), pct(v, f.total)]);
        };
        line("embedding lookup".into(), f.embedding);
        line("output head 2dV".into(), f.head);
        if p.lightning_layers > 0 {
            line(
                format!("lightning projections ({})", layers(p.lightning_layers)),
                f.lightning_projections,
            );
            line(
                format!(
                    "lightning core intra-block (B = {})",
                    cfg.attention.lightning.block_size
                ),
                f.lightning_intra,
            );
            line("lightning core inter-block".into(), f.lightning_inter);
        }
        if p.softmax_layers > 0 {
            line(
                format!("softmax projections ({})", layers(p.softmax_layers)),
                f.softmax_projections,
            );
            line("softmax core QK^T + PV".into(), f.softmax_core);
        }
        if f.dense_ffn > 0.0 {
            line("dense FFN".into(), f.dense_ffn);
        }
        if p.moe_layers > 0 {
            line("routers".into(), f.router);
            line("routed experts (top-k)".into(), f.routed_experts);
            line("shared experts".into(), f.shared_experts);
        }
        line("total forward".into(), f.total);
        out.push_str(&t.render());
        out.push_str(&format!(
            "elementwise ops (norms, SiLU, gates, softmax, RoPE, loss; not in the total): {} \
             ({} of the matmul total)\n\n",
            sci(f.elementwise.total),
            pct(f.elementwise.total, f.total)
        ));
        out.push_str(&format!(
            "activated training FLOPs per token (3 x forward): {}\n",
            sci(self.training_per_token)
        ));
        if let Some(all) = self.all_experts_training_per_token {
            out.push_str(&format!(
                "  (if every routed expert ran on every token: {}, {:.1} x)\n",
                sci(all),
                all / self.training_per_token
            ));
        }
        out.push_str(&format!(
            "attention / total: {} core only, {} with projections\n",
            pct(self.attention_core_share, 1.0),
            pct(self.attention_share, 1.0)
        ));
        out.push_str(&format!(
            "forward with the full (non-causal) attention core: {} ({:.3} x causal)\n\n",
            sci(self.forward_full_core),
            self.forward_full_core / f.total
        ));
        out.push_str("Training FLOPs per token by convention\n");
        let mut t = Table::new(["convention", "FLOPs/token", "/ exact", "what it counts"]).left(3);
        for c in &self.conventions {
            t.row([
                c.convention.name().to_string(),
                c.training_flops_per_token.map_or("n/a".into(), sci),
                c.ratio_to_exact.map_or("".into(), |r| format!("{r:.3}")),
                c.note.clone(),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(&format!(
            "\ntraining on {} tokens: {} FLOPs = {:.4} PFLOP/s-days (exact)\n",
            sci(REPORT_TOKENS),
            sci(self.report_tokens_flops),
            self.report_tokens_pflops_days
        ));
        out
    }
}

fn layers(n: usize) -> String {
    if n == 1 {
        "1 layer".into()
    } else {
        format!("{n} layers")
    }
}
