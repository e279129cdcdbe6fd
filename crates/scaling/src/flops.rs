//! Exact FLOP accounting: matmul FLOPs per token by component, elementwise op counts beside them,
//! and the three conventions (exact, Kaplan's 6N, the paper's Table 1) that a budget can follow.
//!
//! Every number here is per token, for the whole model, averaged over the positions of a training
//! sequence of length `seq`. A matmul of an `m x k` by a `k x n` matrix counts `2mnk` FLOPs.

use scalelab_config::{AttentionKind, FfnKind, ModelConfig, ParamCount};
use serde::{Deserialize, Serialize};

pub use crate::table1::ConventionError;

/// One PFLOP/s-day in FLOPs (`1e15 * 86400`), the compute unit of the paper's Table 2.
pub const PFLOP_S_DAY: f64 = 1e15 * 86_400.0;

/// FLOPs expressed in PFLOP/s-days.
pub fn pflops_days(flops: f64) -> f64 {
    flops / PFLOP_S_DAY
}

/// Training (forward + backward) costs this many forward passes: the backward pass does two
/// matmuls (input and weight gradient) for each one of the forward pass.
pub const TRAINING_MULTIPLIER: f64 = 3.0;

/// Which attention-core entries are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreCounting {
    /// Only the causal (lower-triangular) entries: a token at position `t` meets `t` keys, so the
    /// mean over a sequence of `T` is `(T + 1) / 2` (and `(B + 1) / 2` inside a lightning block).
    #[default]
    Causal,
    /// Every entry of the square score matrices, as a kernel that does not skip masked entries
    /// computes them, and as the paper's Table 1 counts them (`n` keys per query).
    Full,
}

/// Forward matmul FLOPs per token, by component, for the whole model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardFlops {
    /// Sequence length the attention core was averaged over.
    pub seq: usize,
    /// How the attention core was counted.
    pub counting: CoreCounting,
    /// The embedding lookup: a gather, 0 matmul FLOPs (kept as a line so tables show it).
    pub embedding: f64,
    /// Output head `2 d V` (also when the head is tied to the embedding).
    pub head: f64,
    /// Lightning qkv `d -> 3w`, gate `d -> w` and out `w -> d`, all lightning layers.
    pub lightning_projections: f64,
    /// Lightning intra-block term: masked decayed `Q K^T` and its product with `V`,
    /// `2 * 2 * span * w` per layer with `span` the mean keys per query inside a block.
    pub lightning_intra: f64,
    /// Lightning inter-block terms: `q * KV state` (`2 * head_dim * w`) and the state update
    /// `K^T V` (`2 * head_dim * w`), per layer.
    pub lightning_inter: f64,
    /// Softmax q `d -> w`, k and v `d -> kv_heads * head_dim`, out `w -> d`, all softmax layers.
    pub softmax_projections: f64,
    /// Softmax core `Q K^T` and `P V`: `2 * 2 * span * w` per layer (GQA shares keys, not FLOPs).
    pub softmax_core: f64,
    /// Dense SwiGLU `3 * 2 * d * width` per dense layer.
    pub dense_ffn: f64,
    /// MoE routers `2 * d * experts` per MoE layer.
    pub router: f64,
    /// The `top_k` routed experts a token visits, `top_k * 3 * 2 * d * expert_width` per MoE layer.
    pub routed_experts: f64,
    /// Shared experts, `shared * 3 * 2 * d * expert_width` per MoE layer.
    pub shared_experts: f64,
    /// Sum of the matmul lines above: the exact forward count.
    pub total: f64,
    /// Elementwise work (norms, activations, gates, softmax, RoPE), not part of `total`.
    pub elementwise: ElementwiseFlops,
}

impl ForwardFlops {
    /// The attention core (softmax `QK^T`, `PV`; lightning intra and inter terms).
    pub fn attention_core(&self) -> f64 {
        self.lightning_intra + self.lightning_inter + self.softmax_core
    }

    /// Attention core plus the attention projections.
    pub fn attention(&self) -> f64 {
        self.attention_core() + self.lightning_projections + self.softmax_projections
    }

    /// Feed-forward work: dense FFN, routers, routed and shared experts.
    pub fn ffn(&self) -> f64 {
        self.dense_ffn + self.router + self.routed_experts + self.shared_experts
    }

    /// Training FLOPs per token, `3 x` the forward matmul count.
    pub fn training(&self) -> f64 {
        TRAINING_MULTIPLIER * self.total
    }

    /// `total` without the output head, comparable with conventions that exclude embeddings.
    pub fn total_without_head(&self) -> f64 {
        self.total - self.head
    }
}

/// Approximate elementwise op counts per token (forward), by kind; see the crate README for the
/// per-element costs assumed. They are reported beside the matmul count, never inside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementwiseFlops {
    /// RMSNorms: the two per layer, the final one, and lightning's norm over `w` (4 per element).
    pub norms: f64,
    /// Residual adds, plus DeepNorm's `alpha * h` multiply.
    pub residual: f64,
    /// SiLU on lightning's q, k, v and SwiGLU's SiLU and product (4 + 1 per element).
    pub activations: f64,
    /// Lightning's sigmoid output gate and its product (4 per element).
    pub gates: f64,
    /// Softmax over attention scores with the `1/sqrt(head_dim)` scale (5 per score).
    pub attention_softmax: f64,
    /// Lightning decay: the mask on intra-block scores and the `Lambda` scalings of q and k.
    pub decay: f64,
    /// RoPE on q and k (3 per rotated element).
    pub rope: f64,
    /// Router softmax and the weighted combination of expert outputs.
    pub routing: f64,
    /// Softmax and cross-entropy over the vocabulary (5 per logit).
    pub loss: f64,
    /// Sum of the above.
    pub total: f64,
}

/// Mean number of keys a query meets in causal attention over a sequence of `seq` tokens.
pub fn softmax_span(seq: usize, counting: CoreCounting) -> f64 {
    match counting {
        CoreCounting::Causal => (seq as f64 + 1.0) / 2.0,
        CoreCounting::Full => seq as f64,
    }
}

/// Mean number of in-block keys a query meets in lightning's intra-block term, blocks of `block`
/// tokens over a sequence of `seq` (the last block may be partial).
pub fn lightning_span(seq: usize, block: usize, counting: CoreCounting) -> f64 {
    if seq == 0 {
        return 0.0;
    }
    let (full, rest) = ((seq / block) as f64, (seq % block) as f64);
    let b = block as f64;
    let keys = match counting {
        CoreCounting::Causal => full * b * (b + 1.0) / 2.0 + rest * (rest + 1.0) / 2.0,
        CoreCounting::Full => full * b * b + rest * rest,
    };
    keys / seq as f64
}

/// Forward FLOPs per token of `cfg` at sequence length `seq` (a valid config).
pub fn forward_flops(cfg: &ModelConfig, seq: usize, counting: CoreCounting) -> ForwardFlops {
    let d = cfg.hidden_size as f64;
    let w = cfg.attention_width() as f64;
    let hd = cfg.head_dim() as f64;
    let heads = cfg.attention.heads as f64;
    let kvw = (cfg.kv_heads() * cfg.head_dim()) as f64;
    let v = cfg.vocab_size as f64;
    let block = cfg.attention.lightning.block_size;
    let kinds = cfg.attention_kinds();
    let nl = kinds
        .iter()
        .filter(|k| **k == AttentionKind::Lightning)
        .count() as f64;
    let ns = kinds.len() as f64 - nl;
    let nm = cfg
        .ffn_kinds()
        .iter()
        .filter(|k| **k == FfnKind::Moe)
        .count() as f64;
    let nd = cfg.layers as f64 - nm;
    let (experts, top_k, shared, ew) = cfg.ffn.moe.as_ref().map_or((0.0, 0.0, 0.0, 0.0), |m| {
        (
            m.experts as f64,
            m.top_k as f64,
            m.shared_experts as f64,
            m.expert_width as f64,
        )
    });
    let width = cfg.ffn.width.unwrap_or(0) as f64;
    let s_span = softmax_span(seq, counting);
    let l_span = lightning_span(seq, block, counting);

    let head = 2.0 * d * v;
    let lightning_projections = nl * (2.0 * d * 3.0 * w + 2.0 * d * w + 2.0 * w * d);
    let lightning_intra = nl * 2.0 * 2.0 * l_span * w;
    let lightning_inter = nl * (2.0 * hd * w + 2.0 * hd * w);
    let softmax_projections = ns * (2.0 * d * w + 2.0 * 2.0 * d * kvw + 2.0 * w * d);
    let softmax_core = ns * 2.0 * 2.0 * s_span * w;
    let dense_ffn = nd * 3.0 * 2.0 * d * width;
    let router = nm * 2.0 * d * experts;
    let routed_experts = nm * top_k * 3.0 * 2.0 * d * ew;
    let shared_experts = nm * shared * 3.0 * 2.0 * d * ew;
    let total = head
        + lightning_projections
        + lightning_intra
        + lightning_inter
        + softmax_projections
        + softmax_core
        + dense_ffn
        + router
        + routed_experts
        + shared_experts;

    let layers = cfg.layers as f64;
    let rope = cfg.rope_dims() as f64;
    let norms = 4.0 * d * (2.0 * layers + 1.0) + nl * 4.0 * w;
    let residual_per_sublayer = match cfg.residual {
        scalelab_config::Residual::Prenorm => d,
        scalelab_config::Residual::Deepnorm => 2.0 * d,
    };
    let residual = 2.0 * layers * residual_per_sublayer;
    let activations = nl * 4.0 * 3.0 * w + nd * 5.0 * width + nm * (top_k + shared) * 5.0 * ew;
    let gates = nl * 4.0 * w;
    let attention_softmax = ns * 5.0 * s_span * heads;
    let decay = nl * (l_span * heads + 2.0 * w + w * hd / block as f64);
    let rope_ops = ns * 3.0 * rope * (heads + cfg.kv_heads() as f64);
    let routing = nm * (5.0 * experts + 2.0 * d * (top_k + shared));
    let loss = 5.0 * v;
    let elementwise = ElementwiseFlops {
        norms,
        residual,
        activations,
        gates,
        attention_softmax,
        decay,
        rope: rope_ops,
        routing,
        loss,
        total: norms
            + residual
            + activations
            + gates
            + attention_softmax
            + decay
            + rope_ops
            + routing
            + loss,
    };
    ForwardFlops {
        seq,
        counting,
        embedding: 0.0,
        head,
        lightning_projections,
        lightning_intra,
        lightning_inter,
        softmax_projections,
        softmax_core,
        dense_ffn,
        router,
        routed_experts,
        shared_experts,
        total,
        elementwise,
    }
}

/// A FLOP convention: how training FLOPs per token are counted when a budget is turned into
/// tokens, or when results are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// `3 x` the exact forward matmul count, causal attention core included, head included.
    #[default]
    Exact,
    /// Kaplan et al.: `6 N` with `N` the activated non-embedding parameters (no attention core).
    Kaplan,
    /// The paper's Table 1 per layer kind (embeddings and head excluded; dense models only).
    Table1,
}

impl Convention {
    /// All conventions, in the order tables show them.
    pub const ALL: [Convention; 3] = [Convention::Exact, Convention::Kaplan, Convention::Table1];

    /// The name used in YAML, JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Exact => "exact",
            Convention::Kaplan => "kaplan",
            Convention::Table1 => "table1",
        }
    }
}

impl std::fmt::Display for Convention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Kaplan's training FLOPs per token, `6 N` with `N` the activated non-embedding parameters.
pub fn kaplan_flops_per_token(params: &ParamCount) -> f64 {
    6.0 * params.activated as f64
}

/// Training FLOPs per token of `cfg` at `seq` under `convention`.
pub fn training_flops_per_token(
    cfg: &ModelConfig,
    seq: usize,
    convention: Convention,
) -> Result<f64, ConventionError> {
    match convention {
        Convention::Exact => Ok(forward_flops(cfg, seq, CoreCounting::Causal).training()),
        Convention::Kaplan => Ok(kaplan_flops_per_token(&cfg.param_count())),
        Convention::Table1 => crate::table1::flops_per_token(cfg, seq),
    }
}
