//! The model configuration: the YAML schema every model file in `configs/` follows.

use serde::{Deserialize, Serialize};

/// A whole decoder: sizes, the per-layer attention and FFN layout, residual mode.
///
/// Read it with [`ModelConfig::from_yaml_file`], which also validates every value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A label for tables and run directories.
    #[serde(default)]
    pub name: String,
    /// Vocabulary size (MiniMax-Text-01: 200,064).
    pub vocab_size: usize,
    /// Residual-stream width `d` (MiniMax-Text-01: 6144).
    pub hidden_size: usize,
    /// Number of decoder layers, softmax and lightning together.
    pub layers: usize,
    /// Share the embedding matrix with the output head (MiniMax-Text-01: untied).
    #[serde(default)]
    pub tie_embeddings: bool,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Where the norms sit relative to the residual stream.
    #[serde(default)]
    pub residual: Residual,
    /// Attention: which kind each layer uses and the settings of both kinds.
    pub attention: AttentionConfig,
    /// Feed-forward: dense SwiGLU or MoE per layer, and their widths.
    pub ffn: FfnConfig,
}

fn default_norm_eps() -> f64 {
    1e-5
}

/// Residual and normalization layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residual {
    /// `x = x + f(RMSNorm(x))`, the usual GPT/Llama layout.
    #[default]
    Prenorm,
    /// MiniMax's PostNorm with DeepNorm: `h = RMSNorm(x); x = alpha*h + f(h)`,
    /// `alpha = (2N)^0.25`, and DeepNorm's `beta = (8N)^-0.25` init scaling.
    Deepnorm,
}

/// The two attention kinds a layer can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Lightning (linear) attention with MiniMax's per-head decay.
    Lightning,
    /// Causal softmax attention with GQA and partial RoPE.
    Softmax,
}

/// The two feed-forward kinds a layer can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    /// One SwiGLU of width `ffn.width`.
    Dense,
    /// A mixture of SwiGLU experts (`ffn.moe`).
    Moe,
}

/// Attention settings shared by both kinds, and the per-layer layout.
///
/// The layout is given by exactly one of `pattern`, `softmax_every` or `kinds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    /// Letters `L` (lightning) and `S` (softmax), repeated over the layers: MiniMax is `"LLLLLLLS"`,
    /// pure softmax `"S"`, pure lightning `"L"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// One softmax layer after every `k - 1` lightning layers (`8` is MiniMax's layout, `1` is pure
    /// softmax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softmax_every: Option<usize>,
    /// An explicit kind per layer, as long as `layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<AttentionKind>>,
    /// Query heads (both kinds).
    pub heads: usize,
    /// Width of one head; defaults to `hidden_size / heads`. MiniMax uses 128 with 64 heads, so the
    /// attention width (8192) exceeds the hidden size (6144).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Lightning-attention settings.
    #[serde(default)]
    pub lightning: LightningSettings,
    /// Softmax-attention settings.
    #[serde(default)]
    pub softmax: SoftmaxSettings,
}

/// Settings of the lightning-attention layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightningSettings {
    /// Block (chunk) size of the chunked form: 256 in MiniMax's code, 64 in fla.
    #[serde(default = "default_block_size")]
    pub block_size: usize,
}

fn default_block_size() -> usize {
    64
}

impl Default for LightningSettings {
    fn default() -> Self {
        Self {
            block_size: default_block_size(),
        }
    }
}

/// Settings of the softmax-attention layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxSettings {
    /// Key/value heads for GQA; defaults to `heads` (plain MHA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    /// How many leading dims of each head get RoPE (MiniMax: 64 of 128); defaults to the whole head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_dims: Option<usize>,
    /// RoPE base (MiniMax: 1e4 in pre-training, 1e7 in the release).
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
}

fn default_rope_base() -> f64 {
    10_000.0
}

impl Default for SoftmaxSettings {
    fn default() -> Self {
        Self {
            kv_heads: None,
            rope_dims: None,
            rope_base: default_rope_base(),
        }
    }
}

/// Feed-forward settings and the per-layer dense/MoE layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfnConfig {
    /// Letters `D` (dense) and `M` (MoE), repeated over the layers. Defaults to `"M"` when `moe` is
    /// given and `"D"` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// SwiGLU width of the dense layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Mixture-of-experts settings of the MoE layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeSettings>,
}

/// How router scores turn into expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterOrder {
    /// Softmax over all experts, top-k, then the k weights renormalized to sum 1 (MiniMax).
    #[default]
    SoftmaxTopkRenorm,
    /// Top-k logits, then a softmax over those k (Mixtral). Gives the same weights as
    /// `softmax_topk_renorm`, computed the other way round.
    TopkSoftmax,
    /// Softmax over all experts, top-k, weights kept as they are (Switch, GShard): they sum to less
    /// than 1.
    SoftmaxTopk,
}

/// Mixture-of-experts settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSettings {
    /// Routed experts per layer (MiniMax: 32).
    pub experts: usize,
    /// Experts each token is sent to (MiniMax: 2).
    pub top_k: usize,
    /// SwiGLU width of one expert (MiniMax: 9216).
    pub expert_width: usize,
    /// Always-on shared experts of width `expert_width` each (MiniMax: none).
    #[serde(default)]
    pub shared_experts: usize,
    /// Capacity per expert as a multiple of the balanced load `tokens * top_k / experts`; tokens
    /// beyond it are dropped. Absent means dropless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f64>,
    /// How scores become weights.
    #[serde(default)]
    pub router: RouterOrder,
    /// Coefficient of the Switch/GShard load-balancing loss (MiniMax: 0.01).
    #[serde(default = "default_aux_coef")]
    pub aux_loss_coef: f64,
    /// Coefficient of the router z-loss (ST-MoE; 0 disables it).
    #[serde(default)]
    pub z_loss_coef: f64,
}

fn default_aux_coef() -> f64 {
    0.01
}
