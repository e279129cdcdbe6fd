//! Exact parameter counts, computed from the config alone (no tensors are allocated).
//!
//! The counts follow the modules of `scalelab-blocks` one for one; a test there checks them against
//! instantiated models.

use serde::Serialize;

use crate::model::{AttentionKind, FfnKind, ModelConfig};

/// Parameters of one module of each kind, as built by `scalelab-blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModuleParams {
    /// Lightning attention: qkv `d x 3w`, gate `d x w`, out `w x d`, RMSNorm over `w`
    /// (`w = heads * head_dim`).
    pub lightning_attention: u64,
    /// Softmax attention: q `d x w`, k and v `d x kv_heads*head_dim` each, out `w x d`.
    pub softmax_attention: u64,
    /// Dense SwiGLU: `3 * d * width` (0 when no layer is dense).
    pub dense_ffn: u64,
    /// One routed expert: `3 * d * expert_width`.
    pub expert: u64,
    /// One router: `d x experts`, no bias.
    pub router: u64,
    /// The shared experts of one MoE layer together.
    pub shared_experts: u64,
    /// One RMSNorm over the hidden size.
    pub norm: u64,
}

/// Parameters of a whole model, by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Input embedding `vocab x d`.
    pub embedding: u64,
    /// Output head `d x vocab` (0 when tied to the embedding).
    pub head: u64,
    /// All lightning-attention layers.
    pub lightning_attention: u64,
    /// All softmax-attention layers.
    pub softmax_attention: u64,
    /// All dense FFN layers.
    pub dense_ffn: u64,
    /// All routed experts of all MoE layers.
    pub experts: u64,
    /// All shared experts.
    pub shared_experts: u64,
    /// All routers.
    pub routers: u64,
    /// All RMSNorms outside attention (two per layer, one final).
    pub norms: u64,
    /// Every parameter.
    pub total: u64,
    /// Parameters a token passes through, excluding the embedding and the head: all of the above
    /// with only `top_k` routed experts per MoE layer.
    pub activated: u64,
    /// Routed experts a token uses, all layers together (part of `activated`).
    pub activated_experts: u64,
    /// Layers of each kind.
    pub lightning_layers: usize,
    /// Softmax layers.
    pub softmax_layers: usize,
    /// MoE layers.
    pub moe_layers: usize,
    /// Sizes of single modules.
    pub per_module: ModuleParams,
}

impl ParamCount {
    /// Parameters excluding the embedding and the head (Kaplan's `N`).
    pub fn non_embedding(&self) -> u64 {
        self.total - self.embedding - self.head
    }
}

impl ModelConfig {
    /// Sizes of single modules of this config.
    pub fn module_params(&self) -> ModuleParams {
        let d = self.hidden_size as u64;
        let w = self.attention_width() as u64;
        let kvw = (self.kv_heads() * self.head_dim()) as u64;
        let (expert, router, shared) = match &self.ffn.moe {
            Some(m) => {
                let e = 3 * d * m.expert_width as u64;
                (e, d * m.experts as u64, e * m.shared_experts as u64)
            }
            None => (0, 0, 0),
        };
        ModuleParams {
            lightning_attention: d * 3 * w + d * w + w * d + w,
            softmax_attention: d * w + 2 * d * kvw + w * d,
            dense_ffn: 3 * d * self.ffn.width.unwrap_or(0) as u64,
            expert,
            router,
            shared_experts: shared,
            norm: d,
        }
    }

    /// Parameter counts by component. The config must be valid.
    pub fn param_count(&self) -> ParamCount {
        let m = self.module_params();
        let att = self.attention_kinds();
        let ffn = self.ffn_kinds();
        let count = |k| att.iter().filter(|a| **a == k).count();
        let (nl, ns) = (
            count(AttentionKind::Lightning),
            count(AttentionKind::Softmax),
        );
        let nm = ffn.iter().filter(|f| **f == FfnKind::Moe).count();
        let nd = self.layers - nm;
        let (experts_per_layer, top_k) = self
            .ffn
            .moe
            .as_ref()
            .map_or((0, 0), |m| (m.experts as u64, m.top_k as u64));
        let embedding = (self.vocab_size * self.hidden_size) as u64;
        let head = if self.tie_embeddings { 0 } else { embedding };
        let lightning_attention = nl as u64 * m.lightning_attention;
        let softmax_attention = ns as u64 * m.softmax_attention;
        let dense_ffn = nd as u64 * m.dense_ffn;
        let experts = nm as u64 * experts_per_layer * m.expert;
        let shared_experts = nm as u64 * m.shared_experts;
        let routers = nm as u64 * m.router;
        let norms = (2 * self.layers as u64 + 1) * m.norm;
        let total = embedding
            + head
            + lightning_attention
            + softmax_attention
            + dense_ffn
            + experts
            + shared_experts
            + routers
            + norms;
        let activated_experts = nm as u64 * top_k * m.expert;
        let activated = total - embedding - head - experts + activated_experts;
        ParamCount {
            embedding,
            head,
            lightning_attention,
            softmax_attention,
            dense_ffn,
            experts,
            shared_experts,
            routers,
            norms,
            total,
            activated,
            activated_experts,
            lightning_layers: nl,
            softmax_layers: ns,
            moe_layers: nm,
            per_module: m,
        }
    }
}
