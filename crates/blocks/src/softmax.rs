//! Causal softmax attention: MHA or GQA, RoPE on a leading part of each head, a KV cache.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use scalelab_kernels::AttentionBackend;

use crate::init::WeightInit;
use crate::precision::{cast_to, float_dtype, linear, stats_dtype};

/// Configuration of a [`SoftmaxAttention`] layer.
#[derive(Config, Debug)]
pub struct SoftmaxAttentionConfig {
    /// Residual-stream width.
    pub d_model: usize,
    /// Query heads (MiniMax: 64).
    pub heads: usize,
    /// Width of one head (MiniMax: 128).
    pub head_dim: usize,
    /// Key/value heads; must divide `heads` (MiniMax: 8; equal to `heads` is MHA).
    pub kv_heads: usize,
    /// Leading dims of each head that get RoPE, even (MiniMax: 64 of 128); 0 disables RoPE.
    pub rope_dims: usize,
    /// RoPE base (MiniMax: 1e4 in pre-training, 1e7 in the release).
    #[config(default = 10000.0)]
    pub rope_base: f64,
    /// Init of the q and k projections.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub init: WeightInit,
    /// Init of the v projection.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub value_init: WeightInit,
    /// Init of the output projection.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub out_init: WeightInit,
}

impl SoftmaxAttentionConfig {
    /// Builds the layer.
    pub fn init<B: AttentionBackend>(&self, device: &B::Device) -> SoftmaxAttention<B> {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "SoftmaxAttentionConfig: heads ({}) must be divisible by kv_heads ({})",
            self.heads,
            self.kv_heads
        );
        assert!(
            self.rope_dims.is_multiple_of(2) && self.rope_dims <= self.head_dim,
            "SoftmaxAttentionConfig: rope_dims ({}) must be even and at most head_dim ({})",
            self.rope_dims,
            self.head_dim
        );
        let (d, w, kvw) = (
            self.d_model,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        );
        let half = self.rope_dims / 2;
        // One unused entry without RoPE keeps the constant's shape valid.
        let inv_freq: Vec<f64> = (0..half.max(1))
            .map(|i| {
                self.rope_base
                    .powf(-((2 * i) as f64) / self.rope_dims.max(2) as f64)
            })
            .collect();
        SoftmaxAttention {
            q: self.init.linear(d, w, device),
            k: self.init.linear(d, kvw, device),
            v: self.value_init.linear(d, kvw, device),
            out: self.out_init.linear(w, d, device),
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            rope_dims: self.rope_dims,
            inv_freq: {
                let f = Tensor::<B, 1>::from_data(TensorData::from(inv_freq.as_slice()), device);
                let wide = stats_dtype(float_dtype(&f));
                cast_to(f, wide).reshape([1, half.max(1)])
            },
        }
    }
}

/// Keys and values of the tokens seen so far, RoPE already applied: `[batch, kv_heads, len,
/// head_dim]` each.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Cached keys.
    pub k: Tensor<B, 4>,
    /// Cached values.
    pub v: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.k.dims()[2]
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One causal softmax-attention layer.
#[derive(Module, Debug)]
pub struct SoftmaxAttention<B: AttentionBackend> {
    /// Query projection, `d -> heads * head_dim`.
    pub q: Linear<B>,
    /// Key projection, `d -> kv_heads * head_dim`.
    pub k: Linear<B>,
    /// Value projection, `d -> kv_heads * head_dim`.
    pub v: Linear<B>,
    /// Output projection, `heads * head_dim -> d`.
    pub out: Linear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_dims: usize,
    /// RoPE frequencies `base^(-2i/rope_dims)`, `[1, rope_dims / 2]` in f32 (f64 in f64
    /// models), made once (a constant, not a parameter).
    inv_freq: Tensor<B, 2>,
}

impl<B: AttentionBackend> SoftmaxAttention<B> {
    /// Training forward: `[batch, seq, d] -> [batch, seq, d]`, causal, computed in `x`'s float
    /// dtype (softmax in f32; see [`scalelab_kernels::attention`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_cached(x, None).0
    }

    /// Forward after the tokens in `cache` (positions continue from its length); returns the
    /// output and the cache extended with these tokens.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        cache: Option<KvCache<B>>,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let offset = cache.as_ref().map_or(0, KvCache::len);
        let heads = |y: Tensor<B, 3>, n| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = self.apply_rope(heads(linear(&self.q, x.clone()), h), offset);
        let k = self.apply_rope(heads(linear(&self.k, x.clone()), kvh), offset);
        let v = heads(linear(&self.v, x), kvh);
        let cache = match cache {
            Some(c) => KvCache {
                k: Tensor::cat(vec![c.k, k], 2),
                v: Tensor::cat(vec![c.v, v], 2),
            },
            None => KvCache { k, v },
        };
        let o = B::softmax_attention(
            q,
            cache.k.clone(),
            cache.v.clone(),
            1.0 / (hd as f64).sqrt(),
        );
        (
            linear(&self.out, o.swap_dims(1, 2).reshape([b, t, h * hd])),
            cache,
        )
    }

    /// Rotary embedding (rotate-half) on the first `rope_dims` dims of `[batch, heads, len, hd]`,
    /// for positions `offset..offset + len`; the other dims pass through.
    pub fn apply_rope(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        if self.rope_dims == 0 {
            return x;
        }
        let [_, _, n, hd] = x.dims();
        let (r, half) = (self.rope_dims, self.rope_dims / 2);
        let device = x.device();
        let dtype = float_dtype(&x);
        let pos = Tensor::<B, 1, Int>::arange(offset as i64..(offset + n) as i64, &device)
            .float()
            .cast(float_dtype(&self.inv_freq))
            .reshape([n, 1]);
        let angle = (pos * self.inv_freq.clone()).reshape([1, 1, n, half]);
        let (cos, sin) = (
            cast_to(angle.clone().cos(), dtype),
            cast_to(angle.sin(), dtype),
        );
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let mut parts = vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos + x1 * sin,
        ];
        if r < hd {
            parts.push(x.narrow(3, r, hd - r));
        }
        Tensor::cat(parts, 3)
    }
}
