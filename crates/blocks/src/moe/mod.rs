//! Mixture of SwiGLU experts with a softmax top-k router, capacity-limited token dropping, the
//! Switch/GShard load-balancing loss and the router z-loss.
//!
//! The experts' weights are stacked (`[experts, d, width]`), so all experts run as one batched
//! product over a dispatch buffer of fixed shape `[experts, capacity, d]`. Routing stays on the
//! device: top-k, each slot's position in its expert's queue (a cumulative sum), dropping past
//! the capacity, and a weighted scatter-add back to the tokens. With a capacity factor the
//! shapes depend only on the config and the batch shape; dropless routing reads one count per
//! layer to pick the buffer from a short ladder of sizes. [`reference`] keeps the plain
//! host-side dispatch this is tested against.

pub mod reference;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{backend::Backend, DType, Distribution, IndexingUpdateOp, Int, Tensor};
use scalelab_config::RouterOrder;

use crate::ffn::{SwiGlu, SwiGluConfig};
use crate::init::WeightInit;
use crate::precision::{cast_to, float_dtype, linear, stats_dtype};
use scalelab_kernels::gemm::{matmul, GemmBackend};

/// Configuration of a [`Moe`] block.
#[derive(Config, Debug)]
pub struct MoeConfig {
    /// Residual-stream width.
    pub d_model: usize,
    /// Routed experts (MiniMax: 32).
    pub experts: usize,
    /// Experts per token (MiniMax: 2).
    pub top_k: usize,
    /// SwiGLU width of one expert (MiniMax: 9216).
    pub expert_width: usize,
    /// Always-on shared experts, each of `expert_width` (run as one SwiGLU of
    /// `shared_experts * expert_width`).
    #[config(default = 0)]
    pub shared_experts: usize,
    /// Capacity per expert as a multiple of `tokens * top_k / experts`; `None` is dropless.
    #[config(default = "None")]
    pub capacity_factor: Option<f64>,
    /// How router scores become weights.
    #[config(default = "RouterOrder::SoftmaxTopkRenorm")]
    pub router: RouterOrder,
    /// Coefficient of the load-balancing loss in [`MoeOutput::aux_loss`] (MiniMax: 0.01).
    #[config(default = 0.01)]
    pub aux_loss_coef: f64,
    /// Coefficient of the router z-loss in [`MoeOutput::aux_loss`].
    #[config(default = 0.0)]
    pub z_loss_coef: f64,
    /// Init of the router and the experts' `w1`, `w3`.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub init: WeightInit,
    /// Init of the experts' `w2`.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub out_init: WeightInit,
}

impl MoeConfig {
    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Moe<B> {
        assert!(
            self.top_k >= 1 && self.top_k <= self.experts,
            "MoeConfig: top_k ({}) must be between 1 and experts ({})",
            self.top_k,
            self.experts
        );
        let (d, f, e) = (self.d_model, self.expert_width, self.experts);
        let stacked = |init: WeightInit, fan_in, fan_out| {
            let std = init.std(fan_in, fan_out);
            Param::from_tensor(Tensor::random(
                [e, fan_in, fan_out],
                Distribution::Normal(0.0, std),
                device,
            ))
        };
        Moe {
            router: self.init.linear(d, e, device),
            w1: stacked(self.init, d, f),
            w3: stacked(self.init, d, f),
            w2: stacked(self.out_init, f, d),
            shared: (self.shared_experts > 0).then(|| {
                SwiGluConfig::new(d, self.shared_experts * f)
                    .with_init(self.init)
                    .with_out_init(self.out_init)
                    .init(device)
            }),
            top_k: self.top_k,
            capacity_factor: self.capacity_factor,
            router_order: self.router,
            aux_loss_coef: self.aux_loss_coef,
            z_loss_coef: self.z_loss_coef,
        }
    }
}

/// A mixture-of-experts feed-forward block.
#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// Router `d -> experts`, no bias.
    pub router: Linear<B>,
    /// Gate projections of the routed experts, `[experts, d, expert_width]`.
    pub w1: Param<Tensor<B, 3>>,
    /// Up projections, `[experts, d, expert_width]`.
    pub w3: Param<Tensor<B, 3>>,
    /// Down projections, `[experts, expert_width, d]`.
    pub w2: Param<Tensor<B, 3>>,
    /// The shared experts, if any, fused into one SwiGLU.
    pub shared: Option<SwiGlu<B>>,
    top_k: usize,
    #[module(skip)]
    capacity_factor: Option<f64>,
    #[module(skip)]
    router_order: RouterOrder,
    aux_loss_coef: f64,
    z_loss_coef: f64,
}

/// What a [`Moe`] forward returns besides its output: the losses to add and the routing
/// statistics to log.
#[derive(Debug, Clone)]
pub struct MoeOutput<B: Backend> {
    /// `[batch, seq, d]`.
    pub output: Tensor<B, 3>,
    /// `aux_loss_coef * load_balance_loss + z_loss_coef * z_loss`, to add to the training loss.
    pub aux_loss: Tensor<B, 1>,
    /// Routing statistics.
    pub stats: MoeStats<B>,
}

/// Routing statistics of one MoE forward, on the device until a log step reads them.
#[derive(Debug, Clone)]
pub struct MoeStats<B: Backend> {
    /// Switch/GShard load-balancing loss `E * sum_e f_e P_e` (1 when perfectly balanced).
    pub load_balance_loss: Tensor<B, 1>,
    /// Router z-loss `mean(logsumexp(logits)^2)`.
    pub z_loss: Tensor<B, 1>,
    /// Token-slots routed to each expert before dropping, `[experts]`.
    pub routed_per_expert: Tensor<B, 1, Int>,
    /// Token-slots each expert processed (after dropping), `[experts]`.
    pub tokens_per_expert: Tensor<B, 1, Int>,
    /// Token-slots dropped for exceeding capacity, over all `tokens * top_k` slots, `[1]`.
    pub dropped_fraction: Tensor<B, 1>,
    /// The per-expert capacity in force (`None`: dropless).
    pub capacity: Option<usize>,
}

impl<B: Backend> MoeStats<B> {
    /// Reads the statistics (a device sync): `(routed, processed, dropped fraction)`.
    pub fn read(&self) -> (Vec<usize>, Vec<usize>, f64) {
        let ints = |t: &Tensor<B, 1, Int>| {
            t.clone()
                .into_data()
                .convert::<i64>()
                .iter::<i64>()
                .map(|v| v as usize)
                .collect()
        };
        let dropped = self
            .dropped_fraction
            .clone()
            .into_data()
            .convert::<f64>()
            .iter::<f64>()
            .next()
            .unwrap_or(0.0);
        (
            ints(&self.routed_per_expert),
            ints(&self.tokens_per_expert),
            dropped,
        )
    }
}

impl<B: GemmBackend> Moe<B> {
    /// Training forward with the configured capacity: `[batch, seq, d] -> [batch, seq, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> MoeOutput<B> {
        self.route(x, self.capacity_factor)
    }

    /// Forward without token dropping, as used in decoding: a token's output never depends on
    /// the other tokens of the batch.
    pub fn forward_dropless(&self, x: Tensor<B, 3>) -> MoeOutput<B> {
        self.route(x, None)
    }

    /// The routing weights `[tokens, top_k]` and expert indices of `x2` (`[tokens, d]`), plus the
    /// router logits and probabilities, all in f32 (f64 for f64 inputs) whatever `x2`'s dtype.
    pub fn router_weights(&self, x2: Tensor<B, 2>) -> RouterDecision<B> {
        let wide = stats_dtype(float_dtype(&x2));
        let logits = cast_to(linear(&self.router, x2), wide);
        let probs = softmax(logits.clone(), 1);
        let (_, indices) = probs.clone().topk_with_indices(self.top_k, 1);
        let weights = match self.router_order {
            RouterOrder::SoftmaxTopkRenorm => {
                let w = probs.clone().gather(1, indices.clone());
                w.clone() / w.sum_dim(1)
            }
            RouterOrder::TopkSoftmax => softmax(logits.clone().gather(1, indices.clone()), 1),
            RouterOrder::SoftmaxTopk => probs.clone().gather(1, indices.clone()),
        };
        RouterDecision {
            logits,
            probs,
            indices,
            weights,
        }
    }

    /// Routed experts.
    pub fn experts(&self) -> usize {
        self.w1.dims()[0]
    }

    /// The experts' weights in `dtype`, `(w1, w3, w2)`.
    fn expert_weights(
        &self,
        dtype: burn::tensor::FloatDType,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        (
            cast_to(self.w1.val(), dtype),
            cast_to(self.w3.val(), dtype),
            cast_to(self.w2.val(), dtype),
        )
    }

    fn route(&self, x: Tensor<B, 3>, capacity_factor: Option<f64>) -> MoeOutput<B> {
        let [b, t, d] = x.dims();
        let (n, k, e) = (b * t, self.top_k, self.experts());
        let slots = n * k;
        let device = x.device();
        let dtype = float_dtype(&x);
        let x2 = x.reshape([n, d]);
        let decision = self.router_weights(x2.clone());

        // Slot s = rank * n + token: first choices first, each in token order (GShard's priority).
        let expert = decision.indices.clone().transpose().reshape([slots]);
        let hot = expert
            .clone()
            .unsqueeze_dim::<2>(1)
            .equal(Tensor::<B, 1, Int>::arange(0..e as i64, &device).unsqueeze_dim(0))
            .int(); // [slots, e]
        let routed = hot.clone().sum_dim(0).reshape([e]);
        let position = (hot.clone().cumsum(0) * hot).sum_dim(1).reshape([slots]) - 1;
        let capacity = match capacity_factor {
            Some(cf) => capacity_for(cf, slots, e),
            None => dropless_capacity(&routed, n, k, e),
        };
        // Each kept slot's row of the [e * capacity] buffer; dropped slots go to a spare last row.
        let kept = position.clone().lower_elem(capacity as i64);
        let row =
            (expert * capacity as i64 + position).mask_fill(kept.bool_not(), (e * capacity) as i64);
        let token =
            Tensor::<B, 1, Int>::arange(0..slots as i64, &device).remainder_scalar(n as i64);

        let buffer = Tensor::<B, 2>::zeros([e * capacity + 1, d], (&device, DType::from(dtype)))
            .select_assign(
                0,
                row.clone(),
                x2.clone().select(0, token.clone()),
                IndexingUpdateOp::Add,
            )
            .slice(0..e * capacity)
            .reshape([e, capacity, d]);
        let (w1, w3, w2) = self.expert_weights(dtype);
        let hidden = silu(matmul(buffer.clone(), w1)) * matmul(buffer, w3); // [e, capacity, f]
        let y = Tensor::cat(
            vec![
                matmul(hidden, w2).reshape([e * capacity, d]),
                Tensor::zeros([1, d], (&device, DType::from(dtype))),
            ],
            0,
        );
        let weight = cast_to(
            decision.weights.clone().transpose().reshape([slots, 1]),
            dtype,
        );
        let mut out = Tensor::<B, 2>::zeros([n, d], (&device, DType::from(dtype))).select_assign(
            0,
            token,
            y.select(0, row) * weight,
            IndexingUpdateOp::Add,
        );
        if let Some(shared) = &self.shared {
            out = out + shared.forward(x2);
        }

        let processed = routed.clone().clamp_max(capacity as i64);
        let wide = float_dtype(&decision.probs);
        let dropped_fraction =
            (processed.clone().sum().float().cast(wide) / slots as f64).neg() + 1.0;
        let f = routed.clone().float().cast(wide) / slots as f64;
        let (load_balance_loss, z_loss, aux_loss) = self.aux_losses(&decision, f);
        MoeOutput {
            output: out.reshape([b, t, d]),
            aux_loss,
            stats: MoeStats {
                load_balance_loss,
                z_loss,
                routed_per_expert: routed,
                tokens_per_expert: processed,
                dropped_fraction,
                capacity: capacity_factor.map(|_| capacity),
            },
        }
    }

    /// The load-balancing loss from `f` (the fraction of slots routed to each expert, `[e]`),
    /// the z-loss, and their weighted sum.
    fn aux_losses(
        &self,
        decision: &RouterDecision<B>,
        f: Tensor<B, 1>,
    ) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
        let e = self.experts();
        let load_balance_loss =
            (f * decision.probs.clone().mean_dim(0).reshape([e])).sum() * e as f64;
        let z_loss = log_sum_exp(decision.logits.clone()).powi_scalar(2).mean();
        let aux_loss =
            load_balance_loss.clone() * self.aux_loss_coef + z_loss.clone() * self.z_loss_coef;
        (load_balance_loss, z_loss, aux_loss)
    }
}

/// The per-expert capacity of `slots` token-slots over `e` experts at capacity factor `cf`.
fn capacity_for(cf: f64, slots: usize, e: usize) -> usize {
    ((cf * slots as f64 / e as f64).ceil() as usize).max(1)
}

/// The dropless buffer size: the smallest rung of a ladder that depends only on the batch shape
/// (the balanced load times powers of sqrt(2), in multiples of 8, up to every token) that holds
/// the busiest expert. Reads one count from the device.
fn dropless_capacity<B: Backend>(
    routed: &Tensor<B, 1, Int>,
    n: usize,
    k: usize,
    e: usize,
) -> usize {
    let busiest = routed
        .clone()
        .max()
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .next()
        .unwrap_or(0) as usize;
    ladder_rung(busiest, n, k, e)
}

/// The smallest rung `>= busiest` of `ceil(n k / e) * sqrt(2)^i`, rounded up to a multiple of 8
/// and capped at `n` (no expert sees a token twice).
fn ladder_rung(busiest: usize, n: usize, k: usize, e: usize) -> usize {
    let balanced = (n * k).div_ceil(e) as f64;
    (0..)
        .map(|i| {
            let c = (balanced * 2f64.powf(i as f64 / 2.0)).ceil() as usize;
            c.next_multiple_of(8).min(n).max(1)
        })
        .find(|&c| c >= busiest || c == n)
        .expect("the ladder reaches n")
}

/// A router's decision for a batch of tokens.
#[derive(Debug, Clone)]
pub struct RouterDecision<B: Backend> {
    /// `[tokens, experts]`.
    pub logits: Tensor<B, 2>,
    /// Softmax of the logits, `[tokens, experts]`.
    pub probs: Tensor<B, 2>,
    /// Chosen experts, best first, `[tokens, top_k]`.
    pub indices: Tensor<B, 2, Int>,
    /// Their weights, `[tokens, top_k]`.
    pub weights: Tensor<B, 2>,
}

/// `log(sum(exp(x)))` over the last dim, stabilized: `[n, e] -> [n]`.
fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = x.dims();
    let max = x.clone().max_dim(1).detach();
    ((x - max.clone()).exp().sum_dim(1).log() + max).reshape([n])
}

#[cfg(test)]
mod tests {
    use super::ladder_rung;

    #[test]
    fn the_dropless_ladder_holds_the_busiest_expert_and_depends_only_on_the_batch() {
        let (n, k, e) = (4096, 2, 8); // balanced load 1024
        assert_eq!(ladder_rung(0, n, k, e), 1024);
        assert_eq!(ladder_rung(1024, n, k, e), 1024);
        assert_eq!(ladder_rung(1025, n, k, e), 1456); // 1024 sqrt(2), to a multiple of 8
        assert_eq!(ladder_rung(4000, n, k, e), 4096);
        let rungs: std::collections::BTreeSet<usize> =
            (0..=n).map(|b| ladder_rung(b, n, k, e)).collect();
        assert!(rungs.len() <= 6, "{rungs:?}");
        assert!((0..=n).all(|b| ladder_rung(b, n, k, e) >= b));
    }
}
