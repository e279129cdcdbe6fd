//! The hybrid decoder: embedding, layers of lightning or softmax attention each followed by a
//! dense or MoE FFN, final norm, head. Built from a [`ModelConfig`].

use burn::module::Initializer;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::{backend::Backend, FloatDType, Int, Tensor};
use scalelab_config::{AttentionKind, FfnKind, ModelConfig, Residual};
use scalelab_kernels::{gemm::matmul, KernelBackend};

use crate::ffn::{SwiGlu, SwiGluConfig};
use crate::init::WeightInit;
use crate::lightning::{LightningAttention, LightningAttentionConfig};
use crate::moe::{Moe, MoeConfig, MoeStats};
use crate::precision::{cast_to, float_dtype, linear, rms_norm, stats_dtype};
use crate::softmax::{KvCache, SoftmaxAttention, SoftmaxAttentionConfig};

/// The attention of one layer.
#[derive(Module, Debug)]
pub enum Attention<B: KernelBackend> {
    /// Lightning (linear) attention.
    Lightning(LightningAttention<B>),
    /// Softmax attention.
    Softmax(SoftmaxAttention<B>),
}

/// The feed-forward block of one layer.
// One per layer, never moved in a hot loop: boxing a Module variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FeedForward<B: Backend> {
    /// A dense SwiGLU.
    Dense(SwiGlu<B>),
    /// A mixture of experts.
    Moe(Moe<B>),
}

/// One decoder layer: attention, then FFN, with PreNorm or DeepNorm residuals.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: KernelBackend> {
    /// Attention sub-layer.
    pub attention: Attention<B>,
    /// Feed-forward sub-layer.
    pub ffn: FeedForward<B>,
    /// Norm before attention.
    pub attention_norm: RmsNorm<B>,
    /// Norm before the FFN.
    pub ffn_norm: RmsNorm<B>,
    /// DeepNorm's `alpha`; `None` for PreNorm.
    deepnorm_alpha: Option<f64>,
}

/// Per-layer decoding state: the lightning `K^T V` state or the softmax KV cache.
#[derive(Debug, Clone)]
pub enum LayerState<B: Backend> {
    /// `[batch, heads, head_dim, head_dim]`, `None` before the first token.
    Lightning(Option<Tensor<B, 4>>),
    /// Keys and values so far, `None` before the first token.
    Softmax(Option<KvCache<B>>),
}

/// Decoding state of a whole [`HybridDecoder`]: one entry per layer.
#[derive(Debug, Clone)]
pub struct DecoderState<B: Backend> {
    /// One state per layer.
    pub layers: Vec<LayerState<B>>,
    /// Tokens consumed so far.
    pub position: usize,
}

/// What a training forward returns.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// `[batch, seq, vocab]`.
    pub logits: Tensor<B, 3>,
    /// The MoE auxiliary losses of all layers, coefficients applied (zero without MoE): add it
    /// to the language-model loss.
    pub aux_loss: Tensor<B, 1>,
    /// Routing statistics per MoE layer, as `(layer index, stats)`.
    pub moe: Vec<(usize, MoeStats<B>)>,
}

impl<B: KernelBackend> DecoderLayer<B> {
    /// `[batch, seq, d] -> [batch, seq, d]`; the sub-layers compute in `compute`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        compute: FloatDType,
    ) -> (Tensor<B, 3>, Option<crate::moe::MoeOutput<B>>) {
        let attend = |h| match &self.attention {
            Attention::Lightning(a) => a.forward(h),
            Attention::Softmax(a) => a.forward(h),
        };
        let x = self.residual(x, &self.attention_norm, compute, attend);
        let mut moe = None;
        let x = self.residual(x, &self.ffn_norm, compute, |h| match &self.ffn {
            FeedForward::Dense(f) => f.forward(h),
            FeedForward::Moe(m) => {
                let out = m.forward(h);
                let y = out.output.clone();
                moe = Some(out);
                y
            }
        });
        (x, moe)
    }

    fn step(
        &self,
        x: Tensor<B, 3>,
        compute: FloatDType,
        state: &mut LayerState<B>,
    ) -> Tensor<B, 3> {
        let x = self.residual(x, &self.attention_norm, compute, |h| {
            match (&self.attention, &mut *state) {
                (Attention::Lightning(a), LayerState::Lightning(s)) => {
                    let (y, next) = a.forward_with_state(h, s.take());
                    *s = Some(next);
                    y
                }
                (Attention::Softmax(a), LayerState::Softmax(c)) => {
                    let (y, next) = a.forward_cached(h, c.take());
                    *c = Some(next);
                    y
                }
                _ => {
                    panic!("decoder state does not match the layer kinds: build it with init_state")
                }
            }
        });
        self.residual(x, &self.ffn_norm, compute, |h| match &self.ffn {
            FeedForward::Dense(f) => f.forward(h),
            FeedForward::Moe(m) => m.forward_dropless(h).output,
        })
    }

    /// PreNorm: `x + f(norm(x))`. DeepNorm (MiniMax): `h = norm(x); alpha * h + f(h)`. `f` runs
    /// in `compute`; the residual stream keeps `x`'s dtype.
    fn residual(
        &self,
        x: Tensor<B, 3>,
        norm: &RmsNorm<B>,
        compute: FloatDType,
        f: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let stream = float_dtype(&x);
        let h = rms_norm(norm, x.clone());
        let y = cast_to(f(cast_to(h.clone(), compute)), stream);
        match self.deepnorm_alpha {
            None => x + y,
            Some(alpha) => h * alpha + y,
        }
    }
}

/// A decoder whose layers mix lightning and softmax attention, dense and MoE FFNs.
#[derive(Module, Debug)]
pub struct HybridDecoder<B: KernelBackend> {
    /// Token embedding `[vocab, d]`.
    pub embedding: Embedding<B>,
    /// The layers, in order.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// Output head `d -> vocab`; `None` when tied to the embedding.
    pub head: Option<Linear<B>>,
    /// The float dtype the layers and the head compute in; `None`: the weights' own. Set with
    /// [`HybridDecoder::with_compute_dtype`] for mixed precision (f32 weights, bf16 compute).
    #[module(skip)]
    compute_dtype: Option<FloatDType>,
}

impl<B: KernelBackend> HybridDecoder<B> {
    /// The same model computing its layers and head in `dtype` (mixed precision: the weights,
    /// the residual stream and the norms stay in the weights' dtype); `None` computes in the
    /// weights' dtype.
    pub fn with_compute_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// The dtype set by [`Self::with_compute_dtype`].
    pub fn compute_dtype(&self) -> Option<FloatDType> {
        self.compute_dtype
    }

    /// Training forward: tokens `[batch, seq]` -> logits `[batch, seq, vocab]` (in the compute
    /// dtype), plus the MoE auxiliary losses (f32, or f64 for f64 weights) and routing statistics.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
        let mut x = self.embedding.forward(tokens);
        let compute = self.compute_dtype.unwrap_or(float_dtype(&x));
        let wide = stats_dtype(float_dtype(&x));
        let mut aux_loss = Tensor::<B, 1>::zeros([1], &x.device()).cast(wide);
        let mut moe = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, out) = layer.forward(x, compute);
            x = y;
            if let Some(out) = out {
                aux_loss = aux_loss + cast_to(out.aux_loss, wide);
                moe.push((i, out.stats));
            }
        }
        DecoderOutput {
            logits: self.logits(x),
            aux_loss,
            moe,
        }
    }

    /// An empty decoding state, one entry per layer.
    pub fn init_state(&self) -> DecoderState<B> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l.attention {
                Attention::Lightning(_) => LayerState::Lightning(None),
                Attention::Softmax(_) => LayerState::Softmax(None),
            })
            .collect();
        DecoderState {
            layers,
            position: 0,
        }
    }

    /// Decoding forward: tokens `[batch, seq]` continuing after `state` (one token for a decode
    /// step, several for a prefill) -> logits `[batch, seq, vocab]`; `state` moves past them.
    /// MoE layers route without dropping.
    pub fn forward_step(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut DecoderState<B>,
    ) -> Tensor<B, 3> {
        let t = tokens.dims()[1];
        let mut x = self.embedding.forward(tokens);
        let compute = self.compute_dtype.unwrap_or(float_dtype(&x));
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            x = layer.step(x, compute, s);
        }
        state.position += t;
        self.logits(x)
    }

    fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let compute = self.compute_dtype.unwrap_or(float_dtype(&x));
        let x = cast_to(rms_norm(&self.norm, x), compute);
        match &self.head {
            Some(head) => linear(head, x),
            None => {
                let [batch, t, d] = x.dims();
                let w = cast_to(self.embedding.weight.val().transpose(), compute); // [d, vocab]
                let logits = matmul(x.reshape([batch * t, d]), w); // [batch * t, vocab]
                let vocab = logits.dims()[1];
                logits.reshape([batch, t, vocab])
            }
        }
    }
}

/// Builds a [`HybridDecoder`] from a [`ModelConfig`].
pub trait ModelConfigExt {
    /// Instantiates the model on `device`. The config must be valid (configs read with
    /// `ModelConfig::from_yaml_*` are).
    fn init<B: KernelBackend>(&self, device: &B::Device) -> HybridDecoder<B>;
}

impl ModelConfigExt for ModelConfig {
    fn init<B: KernelBackend>(&self, device: &B::Device) -> HybridDecoder<B> {
        if let Err(e) = self.validate() {
            panic!("invalid model config: {e}");
        }
        let inits = Inits::new(self);
        let layers = self
            .attention_kinds()
            .into_iter()
            .zip(self.ffn_kinds())
            .enumerate()
            .map(|(i, (attention, ffn))| layer(self, &inits, i, attention, ffn, device))
            .collect();
        let d = self.hidden_size;
        HybridDecoder {
            embedding: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            layers,
            norm: RmsNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device),
            head: (!self.tie_embeddings).then(|| inits.input.linear(d, self.vocab_size, device)),
            compute_dtype: None,
        }
    }
}

/// The init of each kind of projection under the config's residual mode.
struct Inits {
    /// q, k, gate, router, head.
    input: WeightInit,
    /// v (and FFN w1, w3 under DeepNorm).
    value: WeightInit,
    /// Projections back into the residual stream.
    out: WeightInit,
    /// FFN w1, w3.
    ffn_in: WeightInit,
}

impl Inits {
    /// PreNorm: N(0, 0.02), residual outputs scaled by `1/sqrt(2N)` (GPT-2). DeepNorm: Xavier,
    /// with `beta = (8N)^-0.25` on v, output and FFN projections.
    fn new(cfg: &ModelConfig) -> Self {
        match cfg.residual {
            Residual::Prenorm => {
                let base = WeightInit::Normal { std: 0.02 };
                Self {
                    input: base,
                    value: base,
                    out: WeightInit::Normal {
                        std: 0.02 / (2.0 * cfg.layers as f64).sqrt(),
                    },
                    ffn_in: base,
                }
            }
            Residual::Deepnorm => {
                let beta = WeightInit::Xavier {
                    gain: cfg.deepnorm_beta(),
                };
                Self {
                    input: WeightInit::Xavier { gain: 1.0 },
                    value: beta,
                    out: beta,
                    ffn_in: beta,
                }
            }
        }
    }
}

fn layer<B: KernelBackend>(
    cfg: &ModelConfig,
    inits: &Inits,
    index: usize,
    attention: AttentionKind,
    ffn: FfnKind,
    device: &B::Device,
) -> DecoderLayer<B> {
    let (d, a) = (cfg.hidden_size, &cfg.attention);
    let attention = match attention {
        AttentionKind::Lightning => Attention::Lightning(
            LightningAttentionConfig::new(d, a.heads, cfg.head_dim())
                .with_layer_index(index)
                .with_num_layers(cfg.layers)
                .with_block_size(a.lightning.block_size)
                .with_norm_eps(cfg.norm_eps)
                .with_init(inits.input)
                .with_value_init(inits.value)
                .with_out_init(inits.out)
                .init(device),
        ),
        AttentionKind::Softmax => Attention::Softmax(
            SoftmaxAttentionConfig::new(
                d,
                a.heads,
                cfg.head_dim(),
                cfg.kv_heads(),
                cfg.rope_dims(),
            )
            .with_rope_base(a.softmax.rope_base)
            .with_init(inits.input)
            .with_value_init(inits.value)
            .with_out_init(inits.out)
            .init(device),
        ),
    };
    let ffn = match ffn {
        FfnKind::Dense => FeedForward::Dense(
            SwiGluConfig::new(
                d,
                cfg.ffn.width.expect("validated: dense layers have a width"),
            )
            .with_init(inits.ffn_in)
            .with_out_init(inits.out)
            .init(device),
        ),
        FfnKind::Moe => {
            let m = cfg
                .ffn
                .moe
                .as_ref()
                .expect("validated: MoE layers have settings");
            FeedForward::Moe(
                MoeConfig::new(d, m.experts, m.top_k, m.expert_width)
                    .with_shared_experts(m.shared_experts)
                    .with_capacity_factor(m.capacity_factor)
                    .with_router(m.router)
                    .with_aux_loss_coef(m.aux_loss_coef)
                    .with_z_loss_coef(m.z_loss_coef)
                    .with_init(inits.ffn_in)
                    .with_out_init(inits.out)
                    .init(device),
            )
        }
    };
    let norm = || {
        RmsNormConfig::new(d)
            .with_epsilon(cfg.norm_eps)
            .init(device)
    };
    DecoderLayer {
        attention,
        ffn,
        attention_norm: norm(),
        ffn_norm: norm(),
        deepnorm_alpha: (cfg.residual == Residual::Deepnorm).then(|| cfg.deepnorm_alpha()),
    }
}
