//! IsoFLOP planning: a plan spec (YAML) names architectures, how a size becomes a config, the
//! compute budgets and the sizes trained at each; the plan lists every run with its config and
//! the training tokens that spend the budget under the chosen FLOP convention. A second section
//! matches MoE variants to a dense config at equal activated FLOPs per token.
//!
//! The schema is documented field by field on [`PlanSpec`] and in the crate README.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use scalelab_config::{
    ConfigError, FfnConfig, FfnKind, FieldError, ModelConfig, MoeSettings, ParseError,
};
use serde::{Deserialize, Serialize};

use crate::flops::{pflops_days, training_flops_per_token, Convention, ConventionError};
use crate::text::{count, sci, Table};

/// A plan spec, as written in `experiments/plans/*.yaml`. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// A label for the plan.
    pub name: String,
    /// Training sequence length; the attention core is counted at this length.
    pub seq_len: usize,
    /// FLOP convention turning a budget into tokens: `exact` (default), `kaplan` or `table1`.
    #[serde(default)]
    pub convention: Convention,
    /// Architectures to sweep; every size point is applied to each one's base config.
    #[serde(default)]
    pub architectures: Vec<ArchitectureSpec>,
    /// Optional rule deriving the fields a size point leaves out from its `hidden_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<SizeRule>,
    /// The size points, by name.
    #[serde(default)]
    pub sizes: Vec<SizePoint>,
    /// Compute budgets and the sizes trained at each.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// MoE variants matched to a dense config at equal activated FLOPs per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_vs_dense: Option<MoeVsDenseSpec>,
}

/// One architecture family: a label for results and a base config whose layout (attention
/// pattern, FFN kind, residual, vocabulary, block size, RoPE) every size keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureSpec {
    /// The `arch` label of the runs (and of the results CSV), e.g. `softmax`.
    pub label: String,
    /// Base config path, relative to the spec file.
    pub base: PathBuf,
}

/// How a size point's missing fields follow from its hidden size `d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRule {
    /// Fixed aspect ratio `d / layers`: `layers = round(d / aspect_ratio)`, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<f64>,
    /// Fixed head width: `heads = d / head_dim` (must divide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Dense SwiGLU width as a multiple of `d`, rounded to `multiple_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_ratio: Option<f64>,
    /// Expert width as a multiple of `d`, rounded to `multiple_of` (MoE bases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_ratio: Option<f64>,
    /// Rounding granule of derived widths.
    #[serde(default = "one")]
    pub multiple_of: usize,
}

fn one() -> usize {
    1
}

/// A named model size. Fields left out come from the rule, else from the base config.
///
/// Without an explicit `kv_heads`, the base's query-heads-per-KV-head ratio is kept; without an
/// explicit `rope_dims`, the base's RoPE fraction of the head is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizePoint {
    /// Name used in run names and in `budgets[].sizes`, e.g. `410m`.
    pub name: String,
    /// Residual width `d`.
    pub hidden_size: usize,
    /// Decoder layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// Query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Head width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Key/value heads of softmax layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    /// RoPE dims per head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_dims: Option<usize>,
    /// Dense SwiGLU width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_width: Option<usize>,
    /// Expert width (MoE bases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_width: Option<usize>,
}

/// A compute budget and the sizes trained at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Training FLOPs of each run, under the plan's convention (e.g. `1.0e18`).
    pub flops: f64,
    /// Names of size points; empty or left out means every size.
    #[serde(default)]
    pub sizes: Vec<String>,
}

/// MoE vs dense at a fixed budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeVsDenseSpec {
    /// The dense config, relative to the spec file (every layer dense).
    pub dense: PathBuf,
    /// `arch` label of the dense runs (default: the dense config's name, else `dense`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Budgets (training FLOPs) at which the dense model and every variant are trained.
    pub budgets: Vec<f64>,
    /// Largest relative difference of activated training FLOPs per token allowed between a
    /// variant and the dense model.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Rounding granule of solved expert widths.
    #[serde(default = "default_granule")]
    pub multiple_of: usize,
    /// The MoE variants.
    pub variants: Vec<MoeVariant>,
}

fn default_tolerance() -> f64 {
    0.01
}

fn default_granule() -> usize {
    8
}

/// One MoE variant of the dense model: every FFN becomes an MoE layer.
///
/// Give exactly one of `top_k` and `granularity`. The expert width is solved so the activated
/// FFN FLOPs match the dense SwiGLU: `(top_k + shared) * 6 d e + 2 d E = 6 d W`, i.e.
/// `e = (W - E/3) / (top_k + shared)`, rounded to `multiple_of`; `granularity G = W / e`
/// (dense width over expert width), so `G` given means `top_k = G - shared_experts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeVariant {
    /// `arch` label of the variant's runs (default `moe-e{experts}-k{top_k}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Routed experts per layer.
    pub experts: usize,
    /// Experts each token visits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Dense width over expert width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<usize>,
    /// Always-on shared experts (of the same width).
    #[serde(default)]
    pub shared_experts: usize,
    /// An explicit expert width instead of the solved one (then only checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_width: Option<usize>,
    /// Capacity factor of the MoE layers (absent: dropless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f64>,
}

/// Why a plan could not be made; each names the file, the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The spec file could not be read.
    #[error("cannot read plan spec {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not YAML of the plan schema (syntax, unknown key, wrong type, missing key).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A value breaks a rule.
    #[error("{origin}: {error}")]
    Invalid {
        /// The file, or `<string>`.
        origin: String,
        /// The field (a dotted path such as `budgets[2].sizes`), its value and the rule.
        error: FieldError,
    },
    /// A base or dense config could not be read, or a resolved config is not a valid model.
    #[error("{origin}: {context}: {source}")]
    Config {
        /// The file, or `<string>`.
        origin: String,
        /// Which field or size led to the config.
        context: String,
        /// The config error.
        source: ConfigError,
    },
    /// The convention cannot count a config of the plan.
    #[error("{origin}: {context}: {source}")]
    Convention {
        /// The file, or `<string>`.
        origin: String,
        /// Which run.
        context: String,
        /// Why.
        source: ConventionError,
    },
}

/// One run of a plan: a config trained for `tokens` tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRun {
    /// `{arch}-{size}-{budget}`, or `{arch}-{budget}` in the MoE section.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// Size point name (in the MoE section, the dense config's name, which every variant keeps
    /// apart from its FFN).
    pub size: String,
    /// The budget (training FLOPs) asked for.
    pub budget: f64,
    /// Training FLOPs per token under the plan's convention.
    pub flops_per_token: f64,
    /// Training tokens: `floor(budget / flops_per_token)`.
    pub tokens: u64,
    /// FLOPs the run spends, `tokens * flops_per_token` (within one token's cost of the budget).
    pub flops: f64,
    /// `flops` in PFLOP/s-days.
    pub pflops_days: f64,
    /// All parameters.
    pub params_total: u64,
    /// Activated non-embedding parameters.
    pub params_activated: u64,
    /// Tokens per activated parameter.
    pub tokens_per_param: f64,
    /// The resolved model config.
    pub config: ModelConfig,
}

/// How well one MoE variant matches the dense model's activated FLOPs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeMatch {
    /// Variant label.
    pub variant: String,
    /// Routed experts.
    pub experts: usize,
    /// Top-k.
    pub top_k: usize,
    /// Shared experts.
    pub shared_experts: usize,
    /// Expert width used.
    pub expert_width: usize,
    /// Dense width over expert width.
    pub granularity: f64,
    /// Dense training FLOPs per token.
    pub dense_flops_per_token: f64,
    /// Variant activated training FLOPs per token.
    pub moe_flops_per_token: f64,
    /// `moe / dense - 1`.
    pub relative_difference: f64,
    /// The tolerance it was checked against.
    pub tolerance: f64,
    /// Variant total parameters.
    pub params_total: u64,
    /// Variant activated parameters.
    pub params_activated: u64,
}

/// `scalelab plan SPEC.yaml --json`: every run a sweep would execute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The spec's name.
    pub name: String,
    /// Where the spec came from.
    pub source: String,
    /// Sequence length.
    pub seq_len: usize,
    /// FLOP convention of `flops_per_token`, `tokens` and `flops`.
    pub convention: Convention,
    /// The runs, budgets in the order given, then sizes, then architectures.
    pub runs: Vec<PlannedRun>,
    /// The MoE-vs-dense matches (empty without a `moe_vs_dense` section).
    pub moe_matches: Vec<MoeMatch>,
}

/// Reads a plan spec and resolves every run (`scalelab plan SPEC.yaml`).
pub fn plan_from_file(path: impl AsRef<Path>) -> Result<Plan, PlanError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    plan_from_str(&text, dir, &path.display().to_string())
}

/// Resolves a plan spec given as text; relative config paths are taken from `base_dir`, and
/// errors are prefixed with `origin`.
pub fn plan_from_str(text: &str, base_dir: &Path, origin: &str) -> Result<Plan, PlanError> {
    let spec: PlanSpec = scalelab_config::parse_yaml(text, origin)?;
    Resolver {
        origin: origin.to_string(),
        base_dir: base_dir.to_path_buf(),
    }
    .resolve(&spec)
}

struct Resolver {
    origin: String,
    base_dir: PathBuf,
}

impl Resolver {
    fn invalid(
        &self,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> PlanError {
        PlanError::Invalid {
            origin: self.origin.clone(),
            error: FieldError::new(field, value, rule),
        }
    }

    fn config_err(&self, context: impl Into<String>, source: ConfigError) -> PlanError {
        PlanError::Config {
            origin: self.origin.clone(),
            context: context.into(),
            source,
        }
    }

    fn load(&self, field: &str, path: &Path) -> Result<ModelConfig, PlanError> {
        ModelConfig::from_yaml_file(self.base_dir.join(path)).map_err(|e| {
            self.config_err(format!("{field} (paths are relative to the spec file)"), e)
        })
    }

    fn resolve(&self, spec: &PlanSpec) -> Result<Plan, PlanError> {
        if spec.seq_len == 0 {
            return Err(self.invalid("seq_len", 0, "must be at least 1, e.g. 8192"));
        }
        if spec.architectures.is_empty() && spec.moe_vs_dense.is_none() {
            return Err(self.invalid(
                "architectures",
                "[]",
                "the plan has nothing to run: list architectures (with sizes and budgets) \
                 or add a moe_vs_dense section",
            ));
        }
        self.check_rule(spec)?;
        let mut runs = Vec::new();
        if !spec.architectures.is_empty() {
            runs.extend(self.isoflop_runs(spec)?);
        } else if !spec.budgets.is_empty() || !spec.sizes.is_empty() {
            return Err(self.invalid(
                "architectures",
                "[]",
                "budgets and sizes apply to architectures: list at least one { label, base }",
            ));
        }
        let mut moe_matches = Vec::new();
        if let Some(m) = &spec.moe_vs_dense {
            let (r, matches) = self.moe_runs(spec, m)?;
            runs.extend(r);
            moe_matches = matches;
        }
        Ok(Plan {
            name: spec.name.clone(),
            source: self.origin.clone(),
            seq_len: spec.seq_len,
            convention: spec.convention,
            runs,
            moe_matches,
        })
    }

    fn check_rule(&self, spec: &PlanSpec) -> Result<(), PlanError> {
        let Some(r) = &spec.rule else { return Ok(()) };
        for (field, v) in [
            ("rule.aspect_ratio", r.aspect_ratio),
            ("rule.ffn_ratio", r.ffn_ratio),
            ("rule.expert_ratio", r.expert_ratio),
        ] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(self.invalid(field, v, "must be a positive number"));
                }
            }
        }
        if r.head_dim == Some(0) {
            return Err(self.invalid("rule.head_dim", 0, "must be at least 1, e.g. 64"));
        }
        if r.multiple_of == 0 {
            return Err(self.invalid("rule.multiple_of", 0, "must be at least 1"));
        }
        Ok(())
    }

    fn isoflop_runs(&self, spec: &PlanSpec) -> Result<Vec<PlannedRun>, PlanError> {
        let mut labels = BTreeSet::new();
        let mut bases = Vec::new();
        for (i, a) in spec.architectures.iter().enumerate() {
            if a.label.trim().is_empty() {
                return Err(self.invalid(
                    format!("architectures[{i}].label"),
                    "\"\"",
                    "must name the architecture, e.g. softmax",
                ));
            }
            if !labels.insert(a.label.clone()) {
                return Err(self.invalid(
                    format!("architectures[{i}].label"),
                    &a.label,
                    "labels must be unique",
                ));
            }
            bases.push(self.load(&format!("architectures[{i}].base"), &a.base)?);
        }
        if spec.sizes.is_empty() {
            return Err(self.invalid(
                "sizes",
                "[]",
                "list at least one size point { name, hidden_size }",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, s) in spec.sizes.iter().enumerate() {
            if s.name.trim().is_empty() || !names.insert(s.name.as_str()) {
                return Err(self.invalid(
                    format!("sizes[{i}].name"),
                    format!("{:?}", s.name),
                    "size names must be non-empty and unique",
                ));
            }
        }
        if spec.budgets.is_empty() {
            return Err(self.invalid("budgets", "[]", "list at least one { flops, sizes }"));
        }
        // Resolve every (architecture, size) once, in size order.
        let mut resolved = Vec::new();
        for (si, s) in spec.sizes.iter().enumerate() {
            let mut per_arch = Vec::new();
            for (ai, (a, base)) in spec.architectures.iter().zip(&bases).enumerate() {
                let cfg = self.apply_size(spec, base, &a.label, si, s, ai)?;
                let fpt = training_flops_per_token(&cfg, spec.seq_len, spec.convention).map_err(
                    |source| PlanError::Convention {
                        origin: self.origin.clone(),
                        context: format!("architecture {} at size {}", a.label, s.name),
                        source,
                    },
                )?;
                per_arch.push((cfg, fpt));
            }
            resolved.push(per_arch);
        }
        let mut runs = Vec::new();
        for (bi, b) in spec.budgets.iter().enumerate() {
            self.check_budget(&format!("budgets[{bi}].flops"), b.flops)?;
            let chosen: Vec<usize> = if b.sizes.is_empty() {
                (0..spec.sizes.len()).collect()
            } else {
                b.sizes
                    .iter()
                    .map(|n| {
                        spec.sizes.iter().position(|s| &s.name == n).ok_or_else(|| {
                            self.invalid(
                                format!("budgets[{bi}].sizes"),
                                n,
                                format!(
                                    "names no size point; the sizes are: {}",
                                    spec.sizes
                                        .iter()
                                        .map(|s| s.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            for si in chosen {
                for (ai, a) in spec.architectures.iter().enumerate() {
                    let (cfg, fpt) = &resolved[si][ai];
                    let size = &spec.sizes[si].name;
                    runs.push(self.run(
                        &format!("budgets[{bi}].flops"),
                        format!("{}-{size}-{}", a.label, budget_label(b.flops)),
                        &a.label,
                        size,
                        b.flops,
                        *fpt,
                        cfg.clone(),
                    )?);
                }
            }
        }
        Ok(runs)
    }

    fn check_budget(&self, field: &str, flops: f64) -> Result<(), PlanError> {
        if !(flops > 0.0 && flops.is_finite()) {
            return Err(self.invalid(
                field,
                flops,
                "must be a positive number of training FLOPs, e.g. 1.0e18",
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        field: &str,
        name: String,
        arch: &str,
        size: &str,
        budget: f64,
        flops_per_token: f64,
        config: ModelConfig,
    ) -> Result<PlannedRun, PlanError> {
        let tokens = (budget / flops_per_token).floor();
        if tokens < 1.0 {
            return Err(self.invalid(
                field,
                sci(budget),
                format!(
                    "buys no token of {arch} at size {size}: one token costs {} FLOPs; \
                     raise the budget or drop the size",
                    sci(flops_per_token)
                ),
            ));
        }
        let p = config.param_count();
        let flops = tokens * flops_per_token;
        Ok(PlannedRun {
            name,
            arch: arch.to_string(),
            size: size.to_string(),
            budget,
            flops_per_token,
            tokens: tokens as u64,
            flops,
            pflops_days: pflops_days(flops),
            params_total: p.total,
            params_activated: p.activated,
            tokens_per_param: tokens / p.activated as f64,
            config,
        })
    }

    fn apply_size(
        &self,
        spec: &PlanSpec,
        base: &ModelConfig,
        label: &str,
        si: usize,
        s: &SizePoint,
        ai: usize,
    ) -> Result<ModelConfig, PlanError> {
        let field = |f: &str| format!("sizes[{si}].{f}");
        if s.hidden_size == 0 {
            return Err(self.invalid(field("hidden_size"), 0, "must be at least 1"));
        }
        let rule = spec.rule.as_ref();
        let d = s.hidden_size;
        let round = |x: f64| {
            let g = rule.map_or(1, |r| r.multiple_of) as f64;
            ((x / g).round().max(1.0) * g) as usize
        };
        let mut cfg = base.clone();
        cfg.name = format!("{label}-{}", s.name);
        cfg.hidden_size = d;
        cfg.layers = s
            .layers
            .or_else(|| {
                rule.and_then(|r| r.aspect_ratio)
                    .map(|a| ((d as f64 / a).round() as usize).max(1))
            })
            .unwrap_or(base.layers);
        let head_dim = s.head_dim.or_else(|| rule.and_then(|r| r.head_dim));
        let heads = match (s.heads, head_dim) {
            (Some(h), _) => h,
            (None, Some(hd)) => {
                if hd == 0 || !d.is_multiple_of(hd) {
                    return Err(self.invalid(
                        field("hidden_size"),
                        d,
                        format!(
                            "head_dim ({hd}) must divide hidden_size to derive heads; pick a \
                             multiple of {hd} or give heads explicitly"
                        ),
                    ));
                }
                d / hd
            }
            (None, None) => base.attention.heads,
        };
        cfg.attention.heads = heads;
        cfg.attention.head_dim = head_dim.or(base.attention.head_dim);
        if heads == 0 {
            return Err(self.invalid(field("heads"), 0, "must be at least 1"));
        }
        let new_hd = cfg.head_dim();
        let group = base.attention.heads / base.kv_heads().max(1);
        cfg.attention.softmax.kv_heads = Some(match s.kv_heads {
            Some(k) => k,
            None => {
                if heads % group != 0 {
                    return Err(self.invalid(
                        field("heads"),
                        heads,
                        format!(
                            "the base keeps {group} query heads per KV head, which does not \
                             divide {heads}; give kv_heads explicitly"
                        ),
                    ));
                }
                heads / group
            }
        });
        cfg.attention.softmax.rope_dims = Some(match s.rope_dims {
            Some(r) => r,
            None => {
                let frac = base.rope_dims() as f64 / base.head_dim() as f64;
                ((frac * new_hd as f64 / 2.0).round() as usize) * 2
            }
        });
        let kinds = base.ffn_kinds();
        if kinds.contains(&FfnKind::Dense) {
            cfg.ffn.width = Some(
                s.ffn_width
                    .or_else(|| rule.and_then(|r| r.ffn_ratio).map(|f| round(f * d as f64)))
                    .unwrap_or(base.ffn.width.unwrap_or(0)),
            );
        } else if s.ffn_width.is_some() {
            return Err(self.invalid(
                field("ffn_width"),
                s.ffn_width.unwrap_or(0),
                format!(
                    "architecture {label} has no dense FFN layers; use expert_width for MoE layers"
                ),
            ));
        }
        if let Some(m) = cfg.ffn.moe.as_mut() {
            if let Some(e) = s.expert_width.or_else(|| {
                rule.and_then(|r| r.expert_ratio)
                    .map(|f| round(f * d as f64))
            }) {
                m.expert_width = e;
            }
        } else if s.expert_width.is_some() {
            return Err(self.invalid(
                field("expert_width"),
                s.expert_width.unwrap_or(0),
                format!("architecture {label} has no MoE layers; use ffn_width"),
            ));
        }
        cfg.validate().map_err(|e| {
            self.config_err(
                format!(
                    "size {} (sizes[{si}]) applied to architecture {label} (architectures[{ai}])",
                    s.name
                ),
                e,
            )
        })?;
        Ok(cfg)
    }

    fn moe_runs(
        &self,
        spec: &PlanSpec,
        m: &MoeVsDenseSpec,
    ) -> Result<(Vec<PlannedRun>, Vec<MoeMatch>), PlanError> {
        let dense = self.load("moe_vs_dense.dense", &m.dense)?;
        let width = match (dense.ffn.width, dense.ffn_kinds().contains(&FfnKind::Moe)) {
            (Some(w), false) => w,
            _ => {
                return Err(self.invalid(
                    "moe_vs_dense.dense",
                    m.dense.display(),
                    "must be a dense config (every layer a SwiGLU of ffn.width)",
                ))
            }
        };
        if !(m.tolerance > 0.0 && m.tolerance < 1.0) {
            return Err(self.invalid(
                "moe_vs_dense.tolerance",
                m.tolerance,
                "must be a relative difference between 0 and 1, e.g. 0.01",
            ));
        }
        if m.multiple_of == 0 {
            return Err(self.invalid("moe_vs_dense.multiple_of", 0, "must be at least 1"));
        }
        if m.budgets.is_empty() {
            return Err(self.invalid("moe_vs_dense.budgets", "[]", "list at least one budget"));
        }
        if m.variants.is_empty() {
            return Err(self.invalid(
                "moe_vs_dense.variants",
                "[]",
                "list at least one { experts, top_k }",
            ));
        }
        let conv_err = |context: String| {
            move |source| PlanError::Convention {
                origin: self.origin.clone(),
                context,
                source,
            }
        };
        let dense_label = m.label.clone().unwrap_or_else(|| {
            if dense.name.is_empty() {
                "dense".into()
            } else {
                dense.name.clone()
            }
        });
        let dense_fpt = training_flops_per_token(&dense, spec.seq_len, spec.convention)
            .map_err(conv_err(format!("dense config {dense_label}")))?;
        let mut entries = vec![(dense_label.clone(), dense.clone(), dense_fpt)];
        let dense_size = if dense.name.is_empty() {
            "dense".to_string()
        } else {
            dense.name.clone()
        };
        let mut matches = Vec::new();
        let mut labels = BTreeSet::from([dense_label]);
        for (vi, v) in m.variants.iter().enumerate() {
            let field = |f: &str| format!("moe_vs_dense.variants[{vi}].{f}");
            let active = match (v.top_k, v.granularity) {
                (Some(k), None) => k + v.shared_experts,
                (None, Some(g)) => {
                    if g <= v.shared_experts {
                        return Err(self.invalid(
                            field("granularity"),
                            g,
                            format!(
                                "must exceed shared_experts ({}): top_k = granularity - \
                                 shared_experts",
                                v.shared_experts
                            ),
                        ));
                    }
                    g
                }
                _ => {
                    return Err(self.invalid(
                        field("top_k"),
                        v.top_k.map_or("(missing)".into(), |k| k.to_string()),
                        "give exactly one of top_k and granularity",
                    ))
                }
            };
            let top_k = active - v.shared_experts;
            if top_k == 0 || top_k > v.experts {
                return Err(self.invalid(
                    field("top_k"),
                    top_k,
                    format!("must be between 1 and experts ({})", v.experts),
                ));
            }
            let solved = (width as f64 - v.experts as f64 / 3.0) / active as f64;
            let g = m.multiple_of as f64;
            let expert_width = v
                .expert_width
                .unwrap_or(((solved / g).round().max(1.0) * g) as usize);
            let label = v
                .name
                .clone()
                .unwrap_or_else(|| format!("moe-e{}-k{top_k}", v.experts));
            if !labels.insert(label.clone()) {
                return Err(self.invalid(field("name"), &label, "variant labels must be unique"));
            }
            let mut cfg = dense.clone();
            cfg.name = label.clone();
            cfg.ffn = FfnConfig {
                pattern: None,
                width: None,
                moe: Some(MoeSettings {
                    experts: v.experts,
                    top_k,
                    expert_width,
                    shared_experts: v.shared_experts,
                    capacity_factor: v.capacity_factor,
                    router: Default::default(),
                    aux_loss_coef: 0.01,
                    z_loss_coef: 0.0,
                }),
            };
            cfg.validate().map_err(|e| {
                self.config_err(format!("variant {label} (moe_vs_dense.variants[{vi}])"), e)
            })?;
            let fpt = training_flops_per_token(&cfg, spec.seq_len, spec.convention)
                .map_err(conv_err(format!("variant {label}")))?;
            let rel = fpt / dense_fpt - 1.0;
            if rel.abs() > m.tolerance {
                return Err(self.invalid(
                    field("expert_width"),
                    expert_width,
                    format!(
                        "activated FLOPs per token differ from the dense model's by {:+.3}% \
                         (tolerance {:.3}%): {}",
                        100.0 * rel,
                        100.0 * m.tolerance,
                        if v.expert_width.is_some() {
                            format!("leave expert_width out to solve it (about {solved:.0})")
                        } else {
                            format!(
                                "solved as {solved:.1} and rounded to a multiple of {}; lower \
                                 moe_vs_dense.multiple_of or raise the tolerance",
                                m.multiple_of
                            )
                        }
                    ),
                ));
            }
            let p = cfg.param_count();
            matches.push(MoeMatch {
                variant: label.clone(),
                experts: v.experts,
                top_k,
                shared_experts: v.shared_experts,
                expert_width,
                granularity: width as f64 / expert_width as f64,
                dense_flops_per_token: dense_fpt,
                moe_flops_per_token: fpt,
                relative_difference: rel,
                tolerance: m.tolerance,
                params_total: p.total,
                params_activated: p.activated,
            });
            entries.push((label, cfg, fpt));
        }
        let mut runs = Vec::new();
        for (bi, &b) in m.budgets.iter().enumerate() {
            let field = format!("moe_vs_dense.budgets[{bi}]");
            self.check_budget(&field, b)?;
            for (label, cfg, fpt) in &entries {
                let name = format!("{label}-{}", budget_label(b));
                runs.push(self.run(&field, name, label, &dense_size, b, *fpt, cfg.clone())?);
            }
        }
        Ok((runs, matches))
    }
}

/// `1e18`, `2.5e18`: the shortest exact scientific form of a budget, for run names.
fn budget_label(b: f64) -> String {
    format!("{b:e}")
}

impl Plan {
    /// The table `scalelab plan SPEC.yaml` prints.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "plan {} ({}): {} runs, sequence length {}, FLOPs counted with the {} convention\n\n",
            self.name,
            self.source,
            self.runs.len(),
            self.seq_len,
            self.convention
        );
        let mut t = Table::new([
            "run",
            "arch",
            "size",
            "params",
            "activated",
            "FLOPs/token",
            "tokens",
            "tokens/param",
            "FLOPs",
            "PFLOP/s-days",
        ]);
        for r in &self.runs {
            t.row([
                r.name.clone(),
                r.arch.clone(),
                r.size.clone(),
                count(r.params_total as f64),
                count(r.params_activated as f64),
                sci(r.flops_per_token),
                count(r.tokens as f64),
                format!("{:.1}", r.tokens_per_param),
                sci(r.flops),
                pfd(r.pflops_days),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(&self.moe_text());
        out
    }

    /// The MoE-vs-dense matches as a table (empty without a `moe_vs_dense` section).
    pub fn moe_text(&self) -> String {
        let mut out = String::new();
        if !self.moe_matches.is_empty() {
            out.push_str(
                "\nMoE vs dense: activated training FLOPs per token matched to the dense model\n",
            );
            let mut t = Table::new([
                "variant",
                "experts",
                "top-k",
                "shared",
                "expert width",
                "granularity",
                "params",
                "activated",
                "FLOPs/token",
                "vs dense",
                "tolerance",
            ]);
            for m in &self.moe_matches {
                t.row([
                    m.variant.clone(),
                    m.experts.to_string(),
                    m.top_k.to_string(),
                    m.shared_experts.to_string(),
                    m.expert_width.to_string(),
                    format!("{:.2}", m.granularity),
                    count(m.params_total as f64),
                    count(m.params_activated as f64),
                    sci(m.moe_flops_per_token),
                    format!("{:+.3}%", 100.0 * m.relative_difference),
                    format!("{:.3}%", 100.0 * m.tolerance),
                ]);
            }
            out.push_str(&t.render());
        }
        out
    }
}

/// PFLOP/s-days: plain between 0.01 and 1e5, scientific outside.
fn pfd(x: f64) -> String {
    if (1e-2..1e5).contains(&x) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}
