//! The plain MoE dispatch the batched layer is tested against: the routing read to the host, a
//! dispatch plan built there, and each expert run on the rows routed to it with its own gather
//! and scatter. Slow on a GPU (a sync per layer, shapes that change every step); exact.

use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, DType, IndexingUpdateOp, Int, Tensor, TensorData};

use super::{capacity_for, Moe, MoeOutput, MoeStats};
use crate::precision::{cast_to, float_dtype};

impl<B: scalelab_kernels::GemmBackend> Moe<B> {
    /// [`Moe::forward`] (with `capacity_factor`, `None` dropless) through the plain host-side
    /// dispatch: `[batch, seq, d] -> [batch, seq, d]`.
    pub fn forward_reference(&self, x: Tensor<B, 3>, capacity_factor: Option<f64>) -> MoeOutput<B> {
        let [b, t, d] = x.dims();
        let (n, k, e) = (b * t, self.top_k, self.experts());
        let device = x.device();
        let dtype = float_dtype(&x);
        let x2 = x.reshape([n, d]);
        let decision = self.router_weights(x2.clone());
        let chosen: Vec<usize> = decision
            .indices
            .to_data()
            .iter::<i64>()
            .map(|i| i as usize)
            .collect();
        let capacity = capacity_factor.map(|cf| capacity_for(cf, n * k, e));
        let plan = DispatchPlan::new(&chosen, n, k, e, capacity);

        let weights = cast_to(decision.weights.clone().reshape([n * k]), dtype);
        let (w1, w3, w2) = self.expert_weights(dtype);
        let mut out = x2.zeros_like();
        for (i, (tokens, slots)) in plan.kept.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let tokens = index_tensor::<B>(tokens, &device);
            let w = weights
                .clone()
                .select(0, index_tensor(slots, &device))
                .unsqueeze_dim(1);
            let expert = |m: &Tensor<B, 3>| m.clone().slice(i..i + 1).squeeze_dim::<2>(0);
            let rows = x2.clone().select(0, tokens.clone());
            let hidden = silu(rows.clone().matmul(expert(&w1))) * rows.matmul(expert(&w3));
            out = out.select_assign(
                0,
                tokens,
                hidden.matmul(expert(&w2)) * w,
                IndexingUpdateOp::Add,
            );
        }
        if let Some(shared) = &self.shared {
            out = out + shared.forward(x2);
        }

        let wide = float_dtype(&decision.probs);
        let count = |v: &[usize]| {
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(v.iter().map(|&c| c as i64).collect(), [v.len()]),
                &device,
            )
        };
        let processed: Vec<usize> = plan.kept.iter().map(|(t, _)| t.len()).collect();
        let kept: usize = processed.iter().sum();
        let f = count(&plan.routed).float().cast(wide) / (n * k) as f64;
        let (load_balance_loss, z_loss, aux_loss) = self.aux_losses(&decision, f);
        let dropped = 1.0 - kept as f64 / (n * k) as f64;
        MoeOutput {
            output: out.reshape([b, t, d]),
            aux_loss,
            stats: MoeStats {
                load_balance_loss,
                z_loss,
                routed_per_expert: count(&plan.routed),
                tokens_per_expert: count(&processed),
                dropped_fraction: Tensor::<B, 1>::from_data(
                    TensorData::new(vec![dropped], [1]),
                    (&device, DType::from(wide)),
                ),
                capacity,
            },
        }
    }
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
