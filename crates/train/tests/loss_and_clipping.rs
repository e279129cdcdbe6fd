//! The fused cross-entropy against the textbook form, and on-device global-norm clipping
//! against the norm computed by hand.

use burn::backend::{Autodiff, NdArray};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use scalelab_train::eval::{cross_entropy, cross_entropy_reference};
use scalelab_train::grads::{clip_global_norm, global_norm};

type B = Autodiff<NdArray>;

fn max_abs_diff<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn fused_cross_entropy_matches_log_softmax_in_value_and_gradient() {
    let device = Default::default();
    let (b, t, v) = (3, 5, 17);
    // Large, spread logits: the shifted forms must stay exact where a naive exp would overflow.
    let logits = Tensor::<NdArray, 3>::random([b, t, v], Distribution::Normal(0.0, 8.0), &device)
        .add_scalar(200.0);
    let targets: Vec<i64> = (0..b * t).map(|i| ((i * 7 + 3) % v) as i64).collect();
    let targets = Tensor::<NdArray, 2, Int>::from_data(TensorData::new(targets, [b, t]), &device);

    let run = |fused: bool| {
        let x = Tensor::<B, 3>::from_inner(logits.clone()).require_grad();
        let y = Tensor::<B, 2, Int>::from_inner(targets.clone());
        let loss = if fused {
            cross_entropy(x.clone(), y)
        } else {
            cross_entropy_reference(x.clone(), y)
        };
        // A weight on the loss, as gradient accumulation applies one.
        let grads = (loss.clone() * 0.25).backward();
        (loss.inner(), x.grad(&grads).expect("logits get a gradient"))
    };
    let (loss, grad) = run(true);
    let (ref_loss, ref_grad) = run(false);
    assert!(
        max_abs_diff(loss.clone(), ref_loss.clone()) < 1e-4,
        "loss {} vs {}",
        loss,
        ref_loss
    );
    let scale: f32 = ref_grad.clone().abs().max().into_scalar();
    assert!(scale > 1e-4, "the reference gradient is not trivial");
    let diff = max_abs_diff(grad, ref_grad);
    assert!(diff < 1e-6 + 1e-4 * scale, "gradient differs by {diff}");
}

/// A two-layer module with gradients of a known loss.
fn grads_of(device: &burn::backend::ndarray::NdArrayDevice) -> (Vec<Linear<B>>, GradientsParams) {
    let layers: Vec<Linear<B>> = (0..2)
        .map(|_| LinearConfig::new(4, 3).init::<B>(device))
        .collect();
    let x = Tensor::<B, 2>::random([5, 4], Distribution::Normal(0.0, 1.0), device);
    let loss = layers
        .iter()
        .map(|l| l.forward(x.clone()).powi_scalar(2).sum())
        .reduce(|a, b| a + b)
        .unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &layers);
    (layers, grads)
}

fn by_hand(layers: &[Linear<B>], grads: &GradientsParams) -> f64 {
    let mut total = 0.0;
    for l in layers {
        let w: Tensor<NdArray, 2> = grads.get(l.weight.id).unwrap();
        let b: Tensor<NdArray, 1> = grads.get(l.bias.as_ref().unwrap().id).unwrap();
        total += f64::from(w.powi_scalar(2).sum().into_scalar());
        total += f64::from(b.powi_scalar(2).sum().into_scalar());
    }
    total.sqrt()
}

#[test]
fn clipping_on_the_device_scales_to_the_limit_and_leaves_small_norms_alone() {
    let device = Default::default();
    let (layers, mut grads) = grads_of(&device);
    let norm = by_hand(&layers, &grads);
    assert!(
        norm > 1.0,
        "the test needs a norm above the limit, got {norm}"
    );

    let before: f64 = clip_global_norm::<B, _>(&layers, &mut grads, norm / 4.0, &device)
        .into_scalar()
        .into();
    assert!((before - norm).abs() < 1e-4 * norm, "{before} vs {norm}");
    let after = global_norm::<B, _>(&layers, &grads, &device);
    assert!(
        (after - norm / 4.0).abs() < 1e-4 * norm,
        "clipped to {after}"
    );

    // Below the limit: unchanged.
    let (layers, mut grads) = grads_of(&device);
    let norm = by_hand(&layers, &grads);
    clip_global_norm::<B, _>(&layers, &mut grads, norm * 2.0, &device);
    assert!((by_hand(&layers, &grads) - norm).abs() < 1e-6 * norm);
}
