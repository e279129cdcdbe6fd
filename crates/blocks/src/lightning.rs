//! Lightning attention, MiniMax form: fused SiLU qkv, per-head decayed linear attention, one
//! RMSNorm over all heads, a sigmoid output gate and an output projection.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::precision::{linear, rms_norm};
use scalelab_kernels::LightningBackend;

use crate::init::WeightInit;

/// ALiBi slopes `2^(-8(h+1)/H)` for `H` a power of two; other `H` interleave the slopes of the
/// two neighbouring powers of two, as ALiBi does.
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        (0..n)
            .map(|h| 2f64.powf(-8.0 * (h + 1) as f64 / n as f64))
            .collect()
    }
    if heads.is_power_of_two() {
        return power_of_two(heads);
    }
    let closest = 1 << heads.ilog2();
    let mut slopes = power_of_two(closest);
    slopes.extend(
        alibi_slopes(2 * closest)
            .into_iter()
            .step_by(2)
            .take(heads - closest),
    );
    slopes
}

/// MiniMax's per-head decay rates for layer `layer` of `layers` (all layers counted):
/// `s_h = slope_h * (1 - layer/(layers-1) + 1e-5)`, per-token decay `lambda = exp(-s_h)`.
/// Early layers forget fast, the last layer almost not at all.
pub fn minimax_decay_rates(heads: usize, layer: usize, layers: usize) -> Vec<f64> {
    let depth = if layers > 1 {
        layer as f64 / (layers - 1) as f64
    } else {
        0.0
    };
    alibi_slopes(heads)
        .into_iter()
        .map(|slope| slope * (1.0 - depth + 1e-5))
        .collect()
}

/// Configuration of a [`LightningAttention`] layer.
#[derive(Config, Debug)]
pub struct LightningAttentionConfig {
    /// Residual-stream width.
    pub d_model: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head (MiniMax: 128).
    pub head_dim: usize,
    /// This layer's index among all layers, for the decay schedule.
    #[config(default = 0)]
    pub layer_index: usize,
    /// Number of layers in the model, for the decay schedule.
    #[config(default = 1)]
    pub num_layers: usize,
    /// Block size of the chunked form (MiniMax: 256; fla: 64).
    #[config(default = 64)]
    pub block_size: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Init of the q, k and gate projections.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub init: WeightInit,
    /// Init of the v part of the qkv projection.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub value_init: WeightInit,
    /// Init of the output projection.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub out_init: WeightInit,
}

impl LightningAttentionConfig {
    /// Builds the layer.
    pub fn init<B: LightningBackend>(&self, device: &B::Device) -> LightningAttention<B> {
        assert!(
            self.heads > 0 && self.head_dim > 0 && self.block_size > 0,
            "LightningAttentionConfig: heads, head_dim and block_size must be positive"
        );
        let (d, w) = (self.d_model, self.heads * self.head_dim);
        let decay_rates = minimax_decay_rates(self.heads, self.layer_index, self.num_layers);
        // Fused [q | k | v] columns; q and k drawn with `init`, v with `value_init`, each as if it
        // were its own d x w matrix.
        let qk = self.init.weight::<B>(d, w, [d, 2 * w], device);
        let v = self.value_init.weight::<B>(d, w, [d, w], device);
        let qkv = Linear {
            weight: Param::from_tensor(Tensor::cat(vec![qk, v], 1)),
            bias: None,
        };
        LightningAttention {
            qkv,
            gate: self.init.linear(d, w, device),
            out: self.out_init.linear(w, d, device),
            norm: RmsNormConfig::new(w)
                .with_epsilon(self.norm_eps)
                .init(device),
            heads: self.heads,
            head_dim: self.head_dim,
            block_size: self.block_size,
            decays: Tensor::from_data(TensorData::from(decay_rates.as_slice()), device),
            decay_rates,
        }
    }
}

/// One lightning-attention layer.
#[derive(Module, Debug)]
pub struct LightningAttention<B: LightningBackend> {
    /// Fused q, k, v projection, `d -> 3 * heads * head_dim`.
    pub qkv: Linear<B>,
    /// Output gate, `d -> heads * head_dim`.
    pub gate: Linear<B>,
    /// Output projection, `heads * head_dim -> d`.
    pub out: Linear<B>,
    /// RMSNorm over all heads' outputs together.
    pub norm: RmsNorm<B>,
    heads: usize,
    head_dim: usize,
    block_size: usize,
    /// Per-head decay rates `s_h` (`lambda = exp(-s_h)`).
    #[module(skip)]
    decay_rates: Vec<f64>,
    /// The same rates on the device, `[heads]`, made once (a constant, not a parameter).
    decays: Tensor<B, 1>,
}

impl<B: LightningBackend> LightningAttention<B> {
    /// Training forward: `[batch, seq, d] -> [batch, seq, d]`, computed in `x`'s float dtype
    /// (the weights are cast to it; see [`crate::precision`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_with_state(x, None).0
    }

    /// Forward continuing from `state` (`[batch, heads, head_dim, head_dim]`, the `K^T V` state
    /// after earlier tokens); returns the output and the state after these tokens. Feeding a
    /// sequence in pieces this way equals feeding it whole; one token at a time is decoding
    /// (the backend's decode step).
    ///
    /// The returned state is f32 when the model's float type is narrower (f16, bf16), as MiniMax
    /// keeps it: a decode step then accumulates into f32 instead of rounding the state to 8 bits
    /// of mantissa at every token.
    pub fn forward_with_state(
        &self,
        x: Tensor<B, 3>,
        state: Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let (h, hd) = (self.heads, self.head_dim);
        // [b, t, 3w] -> [3, b, h, t, hd]
        let qkv = silu(linear(&self.qkv, x.clone()))
            .reshape([b, t, 3, h, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let (q, k, v) = (part(0), part(1), part(2));
        let decays = self.decays.clone();
        let state_dtype = state_dtype(q.dtype());
        let (o, state) = if t == 1 {
            let state = state.unwrap_or_else(|| Tensor::zeros([b, h, hd, hd], &x.device()));
            B::lightning_decode(q, k, v, decays, state.cast(state_dtype))
        } else {
            let state = state.map(|st| st.cast(q.dtype()));
            let (o, st) = B::lightning_attention(q, k, v, decays, state, self.block_size);
            (o, st.cast(state_dtype))
        };
        let o = rms_norm(&self.norm, o.swap_dims(1, 2).reshape([b, t, h * hd]));
        let y = linear(&self.out, sigmoid(linear(&self.gate, x)) * o);
        (y, state)
    }

    /// The per-head decay rates `s_h` of this layer.
    pub fn decay_rates(&self) -> &[f64] {
        &self.decay_rates
    }
}

/// The dtype a lightning state is carried in between calls: at least f32.
fn state_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}
