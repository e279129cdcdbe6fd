//! The paper's Table 1 (reference/minimax01.md): parameters and training FLOPs per architecture,
//! with `l` layers, `d` width, `h` heads, `b` batch, `n` sequence length; embeddings and
//! lower-order terms excluded. The `5/(18d)` term is the reference's reconstruction.

use scalelab_config::{AttentionKind, FfnKind, ModelConfig};

/// Softmax parameters, `12 l d^2`.
pub fn softmax_params(l: f64, d: f64) -> f64 {
    12.0 * l * d * d
}

/// Lightning parameters, `12 l d^2 + 2 l d^2 / h`.
pub fn lightning_params(l: f64, d: f64, h: f64) -> f64 {
    12.0 * l * d * d + 2.0 * l * d * d / h
}

/// Hybrid (one softmax layer in eight) parameters, `12 l d^2 + 7 l d^2 / (4h)`.
pub fn hybrid_params(l: f64, d: f64, h: f64) -> f64 {
    12.0 * l * d * d + 7.0 * l * d * d / (4.0 * h)
}

/// Softmax training FLOPs, `72 b n l d^2 (1 + n/(6d) + 5/(18d))`.
pub fn softmax_flops(b: f64, n: f64, l: f64, d: f64) -> f64 {
    b * n * l * softmax_layer_per_token(n, d)
}

/// Lightning training FLOPs, `72 b n l d^2 (1 + 1/(2h) + 5/(18d))`.
pub fn lightning_flops(b: f64, n: f64, l: f64, d: f64, h: f64) -> f64 {
    b * n * l * lightning_layer_per_token(d, h)
}

fn softmax_layer_per_token(n: f64, d: f64) -> f64 {
    72.0 * d * d * (1.0 + n / (6.0 * d) + 5.0 / (18.0 * d))
}

fn lightning_layer_per_token(d: f64, h: f64) -> f64 {
    72.0 * d * d * (1.0 + 1.0 / (2.0 * h) + 5.0 / (18.0 * d))
}

/// Hybrid training FLOPs, `72 b n l d^2 (1 + n/(48d) + 7/(16h) + 5/(18d))`.
pub fn hybrid_flops(b: f64, n: f64, l: f64, d: f64, h: f64) -> f64 {
    72.0 * b * n * l * d * d * (1.0 + n / (48.0 * d) + 7.0 / (16.0 * h) + 5.0 / (18.0 * d))
}

/// Table 1 training FLOPs per token for any dense layout: each softmax layer counts as the
/// softmax row with `l = 1`, each lightning layer as the lightning row. For one softmax layer in
/// eight and `l` a multiple of 8 this is exactly the hybrid row. `d` is `hidden_size` and `h` is
/// `attention.heads`; Table 1 assumes `head_dim = d / h`, MHA and `12 d^2` parameters per layer,
/// whatever the config says.
pub fn flops_per_token(cfg: &ModelConfig, seq: usize) -> Result<f64, ConventionError> {
    let moe_layers = cfg
        .ffn_kinds()
        .iter()
        .filter(|k| **k == FfnKind::Moe)
        .count();
    if moe_layers > 0 {
        return Err(ConventionError::Table1Moe {
            config: cfg.name.clone(),
            moe_layers,
        });
    }
    let (n, d, h) = (
        seq as f64,
        cfg.hidden_size as f64,
        cfg.attention.heads as f64,
    );
    Ok(cfg
        .attention_kinds()
        .iter()
        .map(|k| match k {
            AttentionKind::Softmax => softmax_layer_per_token(n, d),
            AttentionKind::Lightning => lightning_layer_per_token(d, h),
        })
        .sum())
}

/// Why a convention cannot count a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConventionError {
    /// Table 1 has no term for mixture-of-experts layers.
    #[error(
        "the table1 convention has no term for MoE layers ({moe_layers} in {config}); \
         use convention exact or kaplan"
    )]
    Table1Moe {
        /// The config's name.
        config: String,
        /// How many MoE layers it has.
        moe_layers: usize,
    },
}
