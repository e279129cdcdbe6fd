//! Weight initialization: the two schemes the residual modes call for.

use burn::config::Config;
use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Distribution, Tensor};

/// How a projection's weights are drawn (always zero-mean normal, never a bias).
#[derive(Config, Debug, Copy, PartialEq)]
pub enum WeightInit {
    /// `N(0, std^2)`, the GPT-2 / Llama default (`std = 0.02`).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Xavier normal, `std = gain * sqrt(2 / (fan_in + fan_out))`: DeepNorm's init, with
    /// `gain = beta` for value, output and FFN projections.
    Xavier {
        /// Multiplier on the Xavier standard deviation.
        gain: f64,
    },
}

impl Default for WeightInit {
    fn default() -> Self {
        Self::Normal { std: 0.02 }
    }
}

impl WeightInit {
    /// The standard deviation for a `fan_in x fan_out` matrix.
    pub fn std(&self, fan_in: usize, fan_out: usize) -> f64 {
        match *self {
            Self::Normal { std } => std,
            Self::Xavier { gain } => gain * (2.0 / (fan_in + fan_out) as f64).sqrt(),
        }
    }

    /// A tensor of `shape` drawn with the standard deviation of a `fan_in x fan_out` matrix.
    pub(crate) fn weight<B: Backend>(
        &self,
        fan_in: usize,
        fan_out: usize,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Tensor<B, 2> {
        Tensor::random(
            shape,
            Distribution::Normal(0.0, self.std(fan_in, fan_out)),
            device,
        )
    }

    /// A bias-free `Linear` of shape `[d_in, d_out]`, drawn with this scheme.
    pub(crate) fn linear<B: Backend>(
        &self,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Linear<B> {
        LinearConfig::new(d_in, d_out)
            .with_bias(false)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: self.std(d_in, d_out),
            })
            .init(device)
    }
}
