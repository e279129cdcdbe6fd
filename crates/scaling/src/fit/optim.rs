//! Nonlinear fits of laws whose logarithm is a log-sum-exp of terms linear in the parameters,
//! minimized with argmin's L-BFGS (More-Thuente line search) from several starting points.
//!
//! `E + A/N^alpha + B/D^beta` is `ln L = LSE(e, a - alpha ln N, b - beta ln D)` with
//! `E = exp(e)`, `A = exp(a)`, `B = exp(b)` (Hoffmann et al. 2022, approach 3); `E + a C^b` and
//! the MoE law take the same shape, so one objective with an exact gradient serves them all.

use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// The loss on the residual `r = predicted ln L - observed ln L`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Loss {
    /// `r^2 / 2`.
    Squared,
    /// Huber with threshold `delta`: quadratic inside, linear outside.
    Huber(f64),
}

impl Loss {
    fn value(self, r: f64) -> f64 {
        match self {
            Loss::Squared => 0.5 * r * r,
            Loss::Huber(d) if r.abs() <= d => 0.5 * r * r,
            Loss::Huber(d) => d * (r.abs() - 0.5 * d),
        }
    }

    fn slope(self, r: f64) -> f64 {
        match self {
            Loss::Squared => r,
            Loss::Huber(d) => r.clamp(-d, d),
        }
    }
}

/// Observations of a log-sum-exp law: at point `i`, term `j` has log value
/// `theta . features(i, j)`, and the law predicts `ln L = LSE_j(...)`.
#[derive(Debug, Clone)]
pub(crate) struct LseModel {
    params: usize,
    terms: usize,
    features: Vec<f64>,
    y: Vec<f64>,
}

impl LseModel {
    /// A model with `params` parameters and `terms` terms per point.
    pub(crate) fn new(params: usize, terms: usize) -> Self {
        Self {
            params,
            terms,
            features: Vec::new(),
            y: Vec::new(),
        }
    }

    /// Adds a point: one feature row of length `params` per term, and the observed `ln L`.
    pub(crate) fn push(&mut self, rows: &[Vec<f64>], ln_loss: f64) {
        debug_assert_eq!(rows.len(), self.terms);
        for r in rows {
            debug_assert_eq!(r.len(), self.params);
            self.features.extend_from_slice(r);
        }
        self.y.push(ln_loss);
    }

    /// Number of points.
    pub(crate) fn len(&self) -> usize {
        self.y.len()
    }

    /// Observed `ln L`.
    pub(crate) fn y(&self) -> &[f64] {
        &self.y
    }

    fn term(&self, theta: &[f64], i: usize, j: usize) -> f64 {
        let f = &self.features[(i * self.terms + j) * self.params..][..self.params];
        theta.iter().zip(f).map(|(t, x)| t * x).sum()
    }

    /// Predicted `ln L` at point `i`.
    pub(crate) fn predict(&self, theta: &[f64], i: usize) -> f64 {
        let t: Vec<f64> = (0..self.terms).map(|j| self.term(theta, i, j)).collect();
        let m = t.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + t.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    }

    /// The objective over the points `idx` (with repeats, for bootstrap resamples) and its
    /// gradient.
    fn cost_grad(&self, theta: &[f64], idx: &[usize], loss: Loss) -> (f64, Vec<f64>) {
        let mut cost = 0.0;
        let mut grad = vec![0.0; self.params];
        let mut t = vec![0.0; self.terms];
        for &i in idx {
            for (j, tj) in t.iter_mut().enumerate() {
                *tj = self.term(theta, i, j);
            }
            let m = t.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = t.iter().map(|v| (v - m).exp()).sum();
            let r = m + z.ln() - self.y[i];
            cost += loss.value(r);
            let s = loss.slope(r);
            for (j, tj) in t.iter().enumerate() {
                let w = s * (tj - m).exp() / z;
                let f = &self.features[(i * self.terms + j) * self.params..][..self.params];
                for (g, x) in grad.iter_mut().zip(f) {
                    *g += w * x;
                }
            }
        }
        (cost, grad)
    }
}

struct Objective<'a> {
    model: &'a LseModel,
    idx: &'a [usize],
    loss: Loss,
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, Error> {
        Ok(self.model.cost_grad(theta, self.idx, self.loss).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Self::Param) -> Result<Vec<f64>, Error> {
        Ok(self.model.cost_grad(theta, self.idx, self.loss).1)
    }
}

fn lbfgs(model: &LseModel, idx: &[usize], loss: Loss, start: &[f64]) -> Option<(Vec<f64>, f64)> {
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-12)
        .ok()?;
    let result = Executor::new(Objective { model, idx, loss }, solver)
        .configure(|s| s.param(start.to_vec()).max_iters(500))
        .timer(false)
        .run()
        .ok()?;
    let state = result.state();
    let best = state.get_best_param()?.clone();
    let cost = state.get_best_cost();
    (cost.is_finite() && best.iter().all(|v| v.is_finite())).then_some((best, cost))
}

/// The lowest objective over the points `idx` reached from any of `starts`; `None` when every
/// start failed.
pub(crate) fn minimize(
    model: &LseModel,
    idx: &[usize],
    loss: Loss,
    starts: &[Vec<f64>],
) -> Option<(Vec<f64>, f64)> {
    starts
        .iter()
        .filter_map(|s| lbfgs(model, idx, loss, s))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let mut m = LseModel::new(3, 2);
        for (x, y) in [(1.0, 0.9), (2.0, 0.7), (3.0, 0.65), (4.0, 0.6)] {
            m.push(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, x]], f64::ln(y));
        }
        let idx = [0, 1, 2, 3, 3];
        let theta = [-0.5, 0.2, -0.3];
        for loss in [Loss::Squared, Loss::Huber(1e-2)] {
            let (_, g) = m.cost_grad(&theta, &idx, loss);
            for k in 0..3 {
                let h = 1e-6;
                let mut p = theta;
                p[k] += h;
                let mut q = theta;
                q[k] -= h;
                let fd =
                    (m.cost_grad(&p, &idx, loss).0 - m.cost_grad(&q, &idx, loss).0) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{loss:?} {k}: {fd} vs {}",
                    g[k]
                );
            }
        }
    }

    #[test]
    fn lbfgs_finds_the_generating_parameters() {
        // ln L = LSE(e, a + b x) with E = 0.5, a = 1, b = -0.7: noise-free, so the optimum is exact.
        let theta = [f64::ln(0.5), 0.0, -0.7];
        let mut m = LseModel::new(3, 2);
        for i in 0..8 {
            let x = i as f64 * 0.5;
            let rows = [vec![1.0, 0.0, 0.0], vec![0.0, 1.0, x]];
            let mut probe = LseModel::new(3, 2);
            probe.push(&rows, 0.0);
            m.push(&rows, probe.predict(&theta, 0));
        }
        let idx: Vec<usize> = (0..m.len()).collect();
        let (best, cost) = minimize(&m, &idx, Loss::Squared, &[vec![0.0, 1.0, -0.1]]).unwrap();
        assert!(cost < 1e-14, "{cost}");
        for (b, t) in best.iter().zip(theta) {
            assert!((b - t).abs() < 1e-5, "{best:?}");
        }
    }
}
