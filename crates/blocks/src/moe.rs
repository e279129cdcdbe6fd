//! Mixture of SwiGLU experts with a softmax top-k router, capacity-limited token dropping, the
//! Switch/GShard load-balancing loss and the router z-loss.
//!
//! Tokens are dispatched by gather/scatter: each expert runs only on the rows routed to it, so
//! compute grows with `top_k`, not with the number of experts.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor, TensorData};
use scalelab_config::RouterOrder;

use crate::ffn::{SwiGlu, SwiGluConfig};
use crate::init::WeightInit;
use crate::precision::{cast_to, float_dtype, linear, stats_dtype};

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
        let expert = |width| {
            SwiGluConfig::new(self.d_model, width)
                .with_init(self.init)
                .with_out_init(self.out_init)
        };
        Moe {
            router: self.init.linear(self.d_model, self.experts, device),
            experts: (0..self.experts)
                .map(|_| expert(self.expert_width).init(device))
                .collect(),
            shared: (self.shared_experts > 0)
                .then(|| expert(self.shared_experts * self.expert_width).init(device)),
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
    /// The routed experts.
    pub experts: Vec<SwiGlu<B>>,
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

/// Routing statistics of one MoE forward.
#[derive(Debug, Clone)]
pub struct MoeStats<B: Backend> {
    /// Switch/GShard load-balancing loss `E * sum_e f_e P_e` (1 when perfectly balanced).
    pub load_balance_loss: Tensor<B, 1>,
    /// Router z-loss `mean(logsumexp(logits)^2)`.
    pub z_loss: Tensor<B, 1>,
    /// Token-slots routed to each expert before dropping.
    pub routed_per_expert: Vec<usize>,
    /// Token-slots each expert processed (after dropping): the rows its FFN ran on.
    pub tokens_per_expert: Vec<usize>,
    /// Token-slots dropped for exceeding capacity, over all `tokens * top_k` slots.
    pub dropped_fraction: f64,
    /// The per-expert capacity in force (`None`: dropless).
    pub capacity: Option<usize>,
}

impl<B: Backend> Moe<B> {
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

    fn route(&self, x: Tensor<B, 3>, capacity_factor: Option<f64>) -> MoeOutput<B> {
        let [b, t, d] = x.dims();
        let (n, k, e) = (b * t, self.top_k, self.experts.len());
        let device = x.device();
        let x2 = x.reshape([n, d]);
        let decision = self.router_weights(x2.clone());
        let chosen: Vec<usize> = decision
            .indices
            .to_data()
            .iter::<i64>()
            .map(|i| i as usize)
            .collect();
        let capacity =
            capacity_factor.map(|cf| ((cf * (n * k) as f64 / e as f64).ceil() as usize).max(1));
        let plan = DispatchPlan::new(&chosen, n, k, e, capacity);

        let dtype = float_dtype(&x2);
        let weights = cast_to(decision.weights.clone().reshape([n * k]), dtype);
        let mut out = x2.zeros_like();
        for (expert, (tokens, slots)) in self.experts.iter().zip(&plan.kept) {
            if tokens.is_empty() {
                continue;
            }
            let tokens = index_tensor::<B>(tokens, &device);
            let w = weights
                .clone()
                .select(0, index_tensor(slots, &device))
                .unsqueeze_dim(1);
            let y = expert.forward(x2.clone().select(0, tokens.clone())) * w;
            out = out.select_assign(0, tokens, y, IndexingUpdateOp::Add);
        }
        if let Some(shared) = &self.shared {
            out = out + shared.forward(x2);
        }

        let f = plan
            .routed
            .iter()
            .map(|&c| c as f64 / (n * k) as f64)
            .collect::<Vec<_>>();
        let f = Tensor::<B, 1>::from_data(TensorData::from(f.as_slice()), &device)
            .cast(float_dtype(&decision.probs));
        let load_balance_loss = (f * decision.probs.mean_dim(0).reshape([e])).sum() * e as f64;
        let z_loss = log_sum_exp(decision.logits).powi_scalar(2).mean();
        let aux_loss =
            load_balance_loss.clone() * self.aux_loss_coef + z_loss.clone() * self.z_loss_coef;
        let kept: usize = plan.kept.iter().map(|(t, _)| t.len()).sum();
        MoeOutput {
            output: out.reshape([b, t, d]),
            aux_loss,
            stats: MoeStats {
                load_balance_loss,
                z_loss,
                tokens_per_expert: plan.kept.iter().map(|(t, _)| t.len()).collect(),
                routed_per_expert: plan.routed,
                dropped_fraction: 1.0 - kept as f64 / (n * k) as f64,
                capacity,
            },
        }
    }
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

/// Which token-slots each expert processes. Slots are served first choices first, then second
/// choices, each in token order (GShard's priority), until the expert's capacity is full.
struct DispatchPlan {
    /// Per expert: the token rows it runs on and the flat slot (`token * top_k + rank`) of each.
    kept: Vec<(Vec<i64>, Vec<i64>)>,
    /// Per expert: slots routed to it before dropping.
    routed: Vec<usize>,
}

impl DispatchPlan {
    fn new(chosen: &[usize], n: usize, k: usize, e: usize, capacity: Option<usize>) -> Self {
        let mut kept = vec![(Vec::new(), Vec::new()); e];
        let mut routed = vec![0; e];
        for rank in 0..k {
            for token in 0..n {
                let slot = token * k + rank;
                let expert = chosen[slot];
                routed[expert] += 1;
                let (tokens, slots) = &mut kept[expert];
                if capacity.is_none_or(|c| tokens.len() < c) {
                    tokens.push(token as i64);
                    slots.push(slot as i64);
                }
            }
        }
        Self { kept, routed }
    }
}

fn index_tensor<B: Backend>(indices: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
}

/// `log(sum(exp(x)))` over the last dim, stabilized: `[n, e] -> [n]`.
fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = x.dims();
    let max = x.clone().max_dim(1).detach();
    ((x - max.clone()).exp().sum_dim(1).log() + max).reshape([n])
}
