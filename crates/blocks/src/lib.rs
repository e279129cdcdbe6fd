//! Burn modules for hybrid lightning/softmax decoders with mixture-of-experts FFNs, as in
//! MiniMax-01.
//!
//! Each block is a `#[derive(Config)]` config with documented defaults and an `init(&device)`
//! returning a `#[derive(Module)]` struct: [`LightningAttention`], [`SoftmaxAttention`],
//! [`SwiGlu`], [`Moe`]. A whole model comes from a [`ModelConfig`] (the YAML schema of
//! `configs/`) through [`ModelConfigExt::init`].
//!
//! Using it from another Burn project: build a small hybrid MoE decoder from YAML and run a
//! training forward and a decode step.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use scalelab_blocks::{ModelConfig, ModelConfigExt};
//!
//! type B = NdArray;
//! let cfg = ModelConfig::from_yaml_str(r#"
//! vocab_size: 100
//! hidden_size: 32
//! layers: 4
//! attention: { pattern: "LLLS", heads: 4, softmax: { kv_heads: 2 } }
//! ffn: { moe: { experts: 4, top_k: 2, expert_width: 32 } }
//! "#).unwrap();
//! let device = Default::default();
//! let model = cfg.init::<B>(&device);
//! assert_eq!(model.num_params() as u64, cfg.param_count().total);
//!
//! let tokens = Tensor::<B, 2, Int>::from_ints([[1, 2, 3, 4, 5, 6]], &device);
//! let out = model.forward(tokens.clone());
//! assert_eq!(out.logits.dims(), [1, 6, 100]);
//! let lm_loss_plus_aux = out.aux_loss; // add the cross-entropy of out.logits
//!
//! // Decoding: one token at a time with a per-layer state.
//! let mut state = model.init_state();
//! for t in 0..6 {
//!     let logits = model.forward_step(tokens.clone().narrow(1, t, 1), &mut state);
//!     assert_eq!(logits.dims(), [1, 1, 100]);
//! }
//! # use burn::module::Module;
//! ```
#![warn(missing_docs)]

pub mod decoder;
pub mod ffn;
pub mod init;
pub mod lightning;
pub mod moe;
pub mod precision;
pub mod softmax;

/// The repository README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

pub use burn::module::Module;
pub use decoder::{
    Attention, DecoderLayer, DecoderOutput, DecoderState, FeedForward, HybridDecoder, LayerState,
    ModelConfigExt,
};
pub use ffn::{SwiGlu, SwiGluConfig};
pub use init::WeightInit;
pub use lightning::{
    alibi_slopes, minimax_decay_rates, LightningAttention, LightningAttentionConfig,
};
pub use moe::{Moe, MoeConfig, MoeOutput, MoeStats, RouterDecision};
pub use scalelab_config::{ConfigError, ModelConfig};
pub use scalelab_kernels::{AttentionBackend, KernelBackend, LightningBackend};
pub use softmax::{KvCache, SoftmaxAttention, SoftmaxAttentionConfig};
