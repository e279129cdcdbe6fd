//! The hybrid decoder: parameter counts against the analytic ones, causality, decoding, and
//! gradients reaching every parameter.

mod common;

use burn::backend::Autodiff;
use burn::module::{list_param_ids, Module};
use burn::tensor::{Int, Tensor};
use common::*;
use scalelab_blocks::{HybridDecoder, ModelConfigExt};
use scalelab_config::ModelConfig;

/// A spread of small configs: every layout, both residuals, tied and untied, MHA and GQA, full,
/// partial and no RoPE, dense, MoE, mixed, shared experts.
fn configs() -> Vec<ModelConfig> {
    [
        "attention: { pattern: S, heads: 4 }\nffn: { width: 40 }",
        "attention: { pattern: L, heads: 2, head_dim: 12 }\nffn: { width: 24 }\ntie_embeddings: true",
        "attention: { pattern: LLS, heads: 4, softmax: { kv_heads: 2, rope_dims: 4 } }\nffn: { moe: { experts: 4, top_k: 2, expert_width: 16 } }",
        "attention: { softmax_every: 2, heads: 4, head_dim: 6, softmax: { kv_heads: 1, rope_dims: 0 } }\nffn: { pattern: DM, width: 20, moe: { experts: 3, top_k: 1, expert_width: 8, shared_experts: 2 } }\nresidual: deepnorm",
        "attention: { kinds: [softmax, lightning, lightning, softmax, lightning, lightning], heads: 8, head_dim: 4 }\nffn: { pattern: M, moe: { experts: 5, top_k: 3, expert_width: 12, router: topk_softmax, z_loss_coef: 0.001 } }\nresidual: deepnorm\ntie_embeddings: true",
    ]
    .iter()
    .map(|body| cfg(&format!("vocab_size: 50\nhidden_size: 16\nlayers: 6\n{body}\n")))
    .collect()
}

#[test]
fn analytic_parameter_count_equals_the_instantiated_model() {
    for c in configs() {
        let model: HybridDecoder<B> = c.init(&device());
        assert_eq!(
            model.num_params() as u64,
            c.param_count().total,
            "{}",
            c.to_yaml()
        );
    }
}

#[test]
fn shipped_tiny_configs_build_with_their_counted_size() {
    for name in [
        "tiny-softmax",
        "tiny-lightning",
        "tiny-hybrid",
        "tiny-hybrid-moe",
    ] {
        let path = format!(
            "{}/../../configs/tiny/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let c = ModelConfig::from_yaml_file(&path).unwrap();
        let model: HybridDecoder<B> = c.init(&device());
        let n = model.num_params() as u64;
        assert_eq!(n, c.param_count().total, "{name}");
        assert!(
            (500_000..2_000_000).contains(&n),
            "{name} has {n} parameters, not about 1M"
        );
    }
}

/// MoE capacity makes a token's output depend on other tokens, so these checks run dropless.
fn dropless(c: &ModelConfig) -> ModelConfig {
    let mut c = c.clone();
    if let Some(m) = c.ffn.moe.as_mut() {
        m.capacity_factor = None;
    }
    c
}

#[test]
fn decoder_is_causal() {
    for c in configs() {
        let model: HybridDecoder<B> = dropless(&c).init(&device());
        let t = tokens(1, 2, 12, 50);
        let changed = t.clone().slice_assign(
            [0..2, 7..8],
            Tensor::<B, 2, Int>::from_ints([[49], [48]], &device()),
        );
        let (a, b) = (model.forward(t).logits, model.forward(changed).logits);
        assert!(max_abs_diff(a.clone().narrow(1, 0, 7), b.clone().narrow(1, 0, 7)) < 1e-10);
        assert!(max_abs_diff(a.narrow(1, 7, 1), b.narrow(1, 7, 1)) > 1e-8);
    }
}

#[test]
fn decoding_step_by_step_equals_the_full_forward() {
    for c in configs() {
        let model: HybridDecoder<B> = dropless(&c).init(&device());
        let t = tokens(2, 2, 10, 50);
        let full = model.forward(t.clone()).logits;
        let mut state = model.init_state();
        let mut outs = vec![model.forward_step(t.clone().narrow(1, 0, 4), &mut state)];
        for i in 4..10 {
            outs.push(model.forward_step(t.clone().narrow(1, i, 1), &mut state));
        }
        assert_eq!(state.position, 10);
        let err = max_abs_diff(full, Tensor::cat(outs, 1));
        assert!(err < 1e-10, "{}: {err}", c.to_yaml());
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    type A = Autodiff<B>;
    for c in configs() {
        let model: HybridDecoder<A> = c.init(&device());
        // Enough tokens that every expert of every layer is routed some.
        let out = model.forward(tokens(3, 4, 48, 50).into_inner_autodiff());
        assert!(out
            .moe
            .iter()
            .all(|(_, s)| s.read().1.iter().all(|n| *n > 0)));
        let loss = out.logits.powi_scalar(2).mean() + out.aux_loss.sum();
        let grads = loss.backward();
        let ids = list_param_ids(&model);
        let mut missing = 0;
        model.visit(&mut GradCheck {
            grads: &grads,
            missing: &mut missing,
        });
        assert_eq!(
            missing,
            0,
            "{} of {} parameters have no gradient in\n{}",
            missing,
            ids.len(),
            c.to_yaml()
        );
    }
}

struct GradCheck<'a> {
    grads: &'a <Autodiff<B> as burn::tensor::backend::AutodiffBackend>::Gradients,
    missing: &'a mut usize,
}

impl burn::module::ModuleVisitor<Autodiff<B>> for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Autodiff<B>, D>>) {
        match param.val().grad(self.grads) {
            Some(g) if g.clone().abs().sum().into_scalar() > 0.0 => {}
            _ => *self.missing += 1,
        }
    }
}

trait IntoAutodiff {
    fn into_inner_autodiff(self) -> Tensor<Autodiff<B>, 2, Int>;
}

impl IntoAutodiff for Tensor<B, 2, Int> {
    fn into_inner_autodiff(self) -> Tensor<Autodiff<B>, 2, Int> {
        Tensor::from_inner(self)
    }
}
