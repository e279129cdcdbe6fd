//! Model configurations for scalelab.
//!
//! A [`ModelConfig`] is the YAML schema of every file in `configs/`: sizes, which attention kind and
//! which FFN kind each layer uses, and the settings of each. It validates every value with an error
//! that names the field, the value and the rule, resolves the per-layer layout, and counts
//! parameters exactly. It has no Burn dependency, so the FLOP accounting and the command-line tool
//! can use it without a tensor backend; `scalelab-blocks` builds Burn modules from it.
//!
//! ```
//! use scalelab_config::ModelConfig;
//!
//! let cfg = ModelConfig::from_yaml_str(r#"
//! vocab_size: 256
//! hidden_size: 64
//! layers: 4
//! attention: { pattern: "LLLS", heads: 4 }
//! ffn: { width: 128 }
//! "#).unwrap();
//! let lightning = 64 * 3 * 64 + 64 * 64 + 64 * 64 + 64; // qkv, gate, out, norm
//! let softmax = 4 * 64 * 64; // q, k, v, out (MHA)
//! let ffn = 3 * 64 * 128; // SwiGLU
//! let norms = (2 * 4 + 1) * 64;
//! assert_eq!(cfg.param_count().total, 2 * 256 * 64 + 3 * lightning + softmax + 4 * ffn + norms);
//! ```
#![warn(missing_docs)]

mod error;
mod model;
mod params;
mod validate;

pub use error::{parse_yaml, yaml_message, ConfigError, FieldError, ParseError};
pub use model::{
    AttentionConfig, AttentionKind, FfnConfig, FfnKind, LightningSettings, ModelConfig,
    MoeSettings, Residual, RouterOrder, SoftmaxSettings,
};
pub use params::{ModuleParams, ParamCount};
