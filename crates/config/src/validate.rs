//! Reading, validating and resolving a [`ModelConfig`]: every rule a model must satisfy, checked
//! before anything is built.

use std::path::Path;

use crate::error::ConfigError;
use crate::model::{AttentionKind, FfnKind, ModelConfig, MoeSettings};

type Result<T> = std::result::Result<T, ConfigError>;

impl ModelConfig {
    /// Parses and validates a YAML document.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let cfg: Self = crate::parse_yaml(text, "<string>")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a YAML file; errors name the file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text).map_err(|e| e.in_file(path))
    }

    /// The config as YAML (round-trips through [`ModelConfig::from_yaml_str`]).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a ModelConfig always serializes")
    }

    /// Checks every value; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("layers", self.layers)?;
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(ConfigError::invalid(
                "norm_eps",
                self.norm_eps,
                "must be a positive finite number, e.g. 1e-5",
            ));
        }
        self.validate_attention()?;
        self.validate_ffn()?;
        Ok(())
    }

    fn validate_attention(&self) -> Result<()> {
        let a = &self.attention;
        positive("attention.heads", a.heads)?;
        match a.head_dim {
            Some(hd) => positive("attention.head_dim", hd)?,
            None if !self.hidden_size.is_multiple_of(a.heads) => {
                return Err(ConfigError::invalid(
                    "attention.heads",
                    a.heads,
                    format!(
                        "hidden_size ({}) must be divisible by heads ({}) when head_dim is not given; \
                         set attention.head_dim explicitly",
                        self.hidden_size, a.heads
                    ),
                ));
            }
            None => {}
        }
        positive("attention.lightning.block_size", a.lightning.block_size)?;
        let kv = self.kv_heads();
        positive("attention.softmax.kv_heads", kv)?;
        if !a.heads.is_multiple_of(kv) {
            return Err(ConfigError::invalid(
                "attention.softmax.kv_heads",
                kv,
                format!("heads ({}) must be divisible by kv_heads ({kv})", a.heads),
            ));
        }
        let (rope, hd) = (self.rope_dims(), self.head_dim());
        if rope % 2 != 0 || rope > hd {
            return Err(ConfigError::invalid(
                "attention.softmax.rope_dims",
                rope,
                format!("must be even and at most head_dim ({hd}); 0 disables RoPE"),
            ));
        }
        if !(a.softmax.rope_base > 1.0 && a.softmax.rope_base.is_finite()) {
            return Err(ConfigError::invalid(
                "attention.softmax.rope_base",
                a.softmax.rope_base,
                "must be a finite number above 1, e.g. 10000",
            ));
        }
        self.try_attention_kinds().map(|_| ())
    }

    fn validate_ffn(&self) -> Result<()> {
        let kinds = self.try_ffn_kinds()?;
        if kinds.contains(&FfnKind::Dense) {
            match self.ffn.width {
                None => {
                    return Err(ConfigError::invalid(
                        "ffn.width",
                        "(missing)",
                        "dense layers need a SwiGLU width: set ffn.width",
                    ));
                }
                Some(w) => positive("ffn.width", w)?,
            }
        }
        match (&self.ffn.moe, kinds.contains(&FfnKind::Moe)) {
            (None, true) => Err(ConfigError::invalid(
                "ffn.moe",
                "(missing)",
                "ffn.pattern has MoE layers (M): add an ffn.moe section",
            )),
            (Some(moe), _) => validate_moe(moe),
            (None, false) => Ok(()),
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.attention
            .head_dim
            .unwrap_or(self.hidden_size / self.attention.heads.max(1))
    }

    /// Inner width of attention: `heads * head_dim`.
    pub fn attention_width(&self) -> usize {
        self.attention.heads * self.head_dim()
    }

    /// Key/value heads of the softmax layers.
    pub fn kv_heads(&self) -> usize {
        self.attention
            .softmax
            .kv_heads
            .unwrap_or(self.attention.heads)
    }

    /// Leading dims of each softmax head that get RoPE.
    pub fn rope_dims(&self) -> usize {
        self.attention
            .softmax
            .rope_dims
            .unwrap_or_else(|| self.head_dim())
    }

    /// The attention kind of every layer. Panics on an unvalidated, invalid layout.
    pub fn attention_kinds(&self) -> Vec<AttentionKind> {
        self.try_attention_kinds()
            .expect("validated ModelConfig has a valid attention layout")
    }

    /// The FFN kind of every layer. Panics on an unvalidated, invalid layout.
    pub fn ffn_kinds(&self) -> Vec<FfnKind> {
        self.try_ffn_kinds()
            .expect("validated ModelConfig has a valid ffn layout")
    }

    /// The DeepNorm residual multiplier `alpha = (2N)^0.25`.
    pub fn deepnorm_alpha(&self) -> f64 {
        (2.0 * self.layers as f64).powf(0.25)
    }

    /// The DeepNorm init scale `beta = (8N)^-0.25`.
    pub fn deepnorm_beta(&self) -> f64 {
        (8.0 * self.layers as f64).powf(-0.25)
    }

    fn try_attention_kinds(&self) -> Result<Vec<AttentionKind>> {
        let a = &self.attention;
        let given = [
            a.pattern.is_some(),
            a.softmax_every.is_some(),
            a.kinds.is_some(),
        ];
        let count = given.iter().filter(|g| **g).count();
        if count != 1 {
            return Err(ConfigError::invalid(
                "attention",
                format!("{count} layouts given"),
                "give exactly one of attention.pattern (e.g. \"LLLLLLLS\"), \
                 attention.softmax_every (e.g. 8) or attention.kinds (a list as long as layers)",
            ));
        }
        if let Some(p) = &a.pattern {
            return tile_pattern("attention.pattern", p, "L, S", self.layers, |c| match c {
                'L' => Some(AttentionKind::Lightning),
                'S' => Some(AttentionKind::Softmax),
                _ => None,
            });
        }
        if let Some(k) = a.softmax_every {
            if k == 0 {
                return Err(ConfigError::invalid(
                    "attention.softmax_every",
                    k,
                    "must be at least 1 (1 is pure softmax); for pure lightning use pattern: \"L\"",
                ));
            }
            return Ok((0..self.layers)
                .map(|l| {
                    if (l + 1) % k == 0 {
                        AttentionKind::Softmax
                    } else {
                        AttentionKind::Lightning
                    }
                })
                .collect());
        }
        let kinds = a.kinds.clone().unwrap_or_default();
        if kinds.len() != self.layers {
            return Err(ConfigError::invalid(
                "attention.kinds",
                format!("a list of {}", kinds.len()),
                format!("must name one kind per layer: {} entries", self.layers),
            ));
        }
        Ok(kinds)
    }

    fn try_ffn_kinds(&self) -> Result<Vec<FfnKind>> {
        let default = if self.ffn.moe.is_some() { "M" } else { "D" };
        let p = self.ffn.pattern.as_deref().unwrap_or(default);
        tile_pattern("ffn.pattern", p, "D, M", self.layers, |c| match c {
            'D' => Some(FfnKind::Dense),
            'M' => Some(FfnKind::Moe),
            _ => None,
        })
    }
}

fn validate_moe(m: &MoeSettings) -> Result<()> {
    positive("ffn.moe.experts", m.experts)?;
    positive("ffn.moe.expert_width", m.expert_width)?;
    if m.top_k == 0 || m.top_k > m.experts {
        return Err(ConfigError::invalid(
            "ffn.moe.top_k",
            m.top_k,
            format!("must be between 1 and experts ({})", m.experts),
        ));
    }
    if let Some(cf) = m.capacity_factor {
        if !(cf > 0.0 && cf.is_finite()) {
            return Err(ConfigError::invalid(
                "ffn.moe.capacity_factor",
                cf,
                "must be a positive number (e.g. 1.25), or left out for dropless routing",
            ));
        }
    }
    for (field, v) in [
        ("ffn.moe.aux_loss_coef", m.aux_loss_coef),
        ("ffn.moe.z_loss_coef", m.z_loss_coef),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(ConfigError::invalid(
                field,
                v,
                "must be a finite number >= 0",
            ));
        }
    }
    Ok(())
}

fn positive(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(ConfigError::invalid(field, v, "must be at least 1"))
    } else {
        Ok(())
    }
}

/// Repeats a letter pattern over `layers` layers.
fn tile_pattern<T: Copy>(
    field: &str,
    pattern: &str,
    allowed: &str,
    layers: usize,
    letter: impl Fn(char) -> Option<T>,
) -> Result<Vec<T>> {
    let letters: Vec<char> = pattern.chars().filter(|c| !c.is_whitespace()).collect();
    if letters.is_empty() {
        return Err(ConfigError::invalid(
            field,
            format!("{pattern:?}"),
            "must have at least one letter",
        ));
    }
    if letters.len() > layers {
        return Err(ConfigError::invalid(
            field,
            format!("{pattern:?}"),
            format!(
                "has {} letters but the model has {layers} layers; shorten it or add layers",
                letters.len()
            ),
        ));
    }
    let kinds: Vec<T> = letters
        .iter()
        .map(|&c| {
            letter(c).ok_or_else(|| {
                ConfigError::invalid(
                    field,
                    format!("{pattern:?}"),
                    format!("unknown letter {c:?}; the letters are {allowed}"),
                )
            })
        })
        .collect::<Result<_>>()?;
    Ok((0..layers).map(|l| kinds[l % kinds.len()]).collect())
}
