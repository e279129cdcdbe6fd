//! Scaling-law fits to a results table, per architecture label, with seeded bootstrap intervals
//! and goodness of fit:
//!
//! - `L(C) = a C^b`, log-log least squares over the lowest loss at each budget (Table 2's form);
//! - `L(C) = E + a C^b`, nonlinear least squares on `ln L` over the same points;
//! - `N_opt(C) = k C^a` and `D_opt(C) = k' C^b` from IsoFLOP parabolas (Chinchilla approach 2);
//! - `L(N, D) = E + A/N^alpha + B/D^beta` (approach 3: Huber loss on `ln L`, L-BFGS from a grid);
//! - the paper's MoE law `L(P_act, T) = d + a P_act^alpha + b T^beta + c (P_act T)^gamma`.
//!
//! `C` is in PFLOP/s-days, `N` and `P_act` are `activated_params`, `D` and `T` are `tokens`.

mod data;
mod optim;
mod stats;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::record::REQUIRED_COLUMNS;
pub use data::{read_results, read_results_str, FitError, ResultRow};

use crate::flops::{pflops_days, PFLOP_S_DAY};
use crate::paper::{power_law_crossing, table2_for, PaperLaws};
use crate::text::sci;
use optim::{minimize, Loss, LseModel};

/// Which law(s) `scalelab fit --law` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Law {
    /// `L(C) = a C^b`.
    Power,
    /// `L(C) = E + a C^b`.
    PowerIrreducible,
    /// `N_opt(C)`, `D_opt(C)` from IsoFLOP parabolas.
    Isoflop,
    /// `L(N, D) = E + A/N^alpha + B/D^beta`.
    Parametric,
    /// `L(P_act, T) = d + a P_act^alpha + b T^beta + c (P_act T)^gamma`.
    Moe,
    /// All of the above.
    #[default]
    All,
}

impl Law {
    /// The names `--law` accepts, in the order of the variants.
    pub const NAMES: [&'static str; 6] = [
        "power",
        "power-irreducible",
        "isoflop",
        "parametric",
        "moe",
        "all",
    ];
    const VARIANTS: [Law; 6] = [
        Law::Power,
        Law::PowerIrreducible,
        Law::Isoflop,
        Law::Parametric,
        Law::Moe,
        Law::All,
    ];

    /// The `--law` name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::VARIANTS.iter().position(|l| *l == self).unwrap_or(5)]
    }

    fn includes(self, law: Law) -> bool {
        self == Law::All || self == law
    }
}

impl FromStr for Law {
    type Err = FitError;

    fn from_str(s: &str) -> Result<Self, FitError> {
        let k = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == k)
            .map(|i| Self::VARIANTS[i])
            .ok_or_else(|| FitError::UnknownLaw {
                given: s.to_string(),
            })
    }
}

/// Settings of the fits; the defaults are what `scalelab fit` uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitOptions {
    /// Bootstrap resamples per fit (at least 10).
    pub bootstrap: usize,
    /// Seed of the resampling (per architecture and law, so adding a law changes nothing else).
    pub seed: u64,
    /// Coverage of the percentile intervals.
    pub confidence: f64,
    /// Huber threshold on `ln L` residuals of the parametric and MoE laws (Chinchilla: 1e-3).
    pub huber_delta: f64,
    /// Rows whose FLOPs agree within this relative difference form one budget.
    pub budget_tolerance: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            bootstrap: 200,
            seed: 0,
            confidence: 0.95,
            huber_delta: 1e-3,
            budget_tolerance: 0.01,
        }
    }
}

impl FitOptions {
    fn validate(&self) -> Result<(), FitError> {
        let bad = |option, value: String, rule| {
            Err(FitError::BadOption {
                option,
                value,
                rule,
            })
        };
        if self.bootstrap < 10 {
            return bad(
                "bootstrap",
                self.bootstrap.to_string(),
                "must be at least 10",
            );
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad(
                "confidence",
                self.confidence.to_string(),
                "must be between 0 and 1, e.g. 0.95",
            );
        }
        if !(self.huber_delta > 0.0 && self.huber_delta.is_finite()) {
            return bad(
                "huber_delta",
                self.huber_delta.to_string(),
                "must be positive",
            );
        }
        if !(self.budget_tolerance >= 0.0 && self.budget_tolerance < 0.5) {
            return bad(
                "budget_tolerance",
                self.budget_tolerance.to_string(),
                "must be in [0, 0.5)",
            );
        }
        Ok(())
    }
}

/// A fitted parameter and its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Parameter name as in the law's formula.
    pub name: String,
    /// Fit to all points.
    pub value: f64,
    /// Lower end of the percentile interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Whether a law could be fitted, and if not, why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FitStatus {
    /// Fitted; the estimates are meaningful.
    Fitted,
    /// Fewer points than parameters + 1.
    TooFewPoints {
        /// Points available.
        points: usize,
        /// Parameters of the law.
        parameters: usize,
        /// Points needed.
        needed: usize,
        /// What a point is for this law.
        what: String,
    },
    /// An exponent's interval contains 0: the data show no trend in that variable.
    NoTrend {
        /// The exponent.
        parameter: String,
        /// Its interval.
        lo: f64,
        /// Its interval.
        hi: f64,
    },
    /// The optimizer or the bootstrap failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One fitted law of one architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LawFit {
    /// The law, e.g. `L(C)`, `N_opt(C)`, `L(N, D)`.
    pub law: String,
    /// How it was fitted and on which points.
    pub method: String,
    /// Fitted, or why not.
    #[serde(flatten)]
    pub status: FitStatus,
    /// The law with its numbers in the paper's notation (only when fitted).
    pub formula: Option<String>,
    /// Estimates with intervals (empty unless fitted).
    pub params: Vec<Estimate>,
    /// R^2 of the fitted quantity in log space.
    pub r2_log: Option<f64>,
    /// Root-mean-square error, in the unit `rmse_of` names.
    pub rmse: Option<f64>,
    /// What `rmse` measures.
    pub rmse_of: String,
    /// Points fitted.
    pub points: usize,
    /// Bootstrap resamples that produced a fit.
    pub bootstrap_used: usize,
    /// Per-budget details and remarks.
    pub notes: Vec<String>,
    #[serde(skip)]
    samples: Vec<Vec<f64>>,
}

impl LawFit {
    /// Whether the law was fitted.
    pub fn is_fitted(&self) -> bool {
        self.status == FitStatus::Fitted
    }

    /// The estimate named `name`, if fitted.
    pub fn param(&self, name: &str) -> Option<&Estimate> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters fitted to each bootstrap resample (in the order of `params`, natural
    /// units), so callers can draw confidence bands of the law; empty unless fitted.
    pub fn bootstrap_samples(&self) -> &[Vec<f64>] {
        &self.samples
    }
}

/// The fits of one architecture label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchFit {
    /// The label.
    pub arch: String,
    /// Rows with this label.
    pub runs: usize,
    /// Distinct budgets among them.
    pub budgets: usize,
    /// The fitted laws.
    pub fits: Vec<LawFit>,
    /// The paper's Table 2 row for this label, if it has one.
    pub paper: Option<PaperLaws>,
}

/// Where two architectures' fitted `L(C) = a C^b` curves cross.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    /// First architecture.
    pub a: String,
    /// Second architecture.
    pub b: String,
    /// The crossing in PFLOP/s-days (`None`: parallel curves).
    pub pflops_days: Option<f64>,
    /// The crossing in FLOPs.
    pub flops: Option<f64>,
    /// Bootstrap interval of the crossing (pairs of resamples).
    pub interval: Option<(f64, f64)>,
    /// Compute range (PFLOP/s-days) both architectures have data in (`lo > hi`: none).
    pub range: (f64, f64),
    /// Whether the crossing lies inside `range`.
    pub inside_range: bool,
    /// The architecture with the lower fitted loss at the top of `range`.
    pub lower_at_top: String,
    /// Where the paper's Table 2 curves of the same labels cross.
    pub paper_pflops_days: Option<f64>,
}

/// `scalelab fit RESULTS.csv --json`: every fit of every architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    /// The results file.
    pub source: String,
    /// The law(s) asked for.
    pub law: Law,
    /// Settings.
    pub options: FitOptions,
    /// Per architecture, in label order.
    pub archs: Vec<ArchFit>,
    /// Crossings of the `L(C) = a C^b` fits, for every pair of fitted architectures.
    pub crossings: Vec<Crossing>,
}

/// Reads a results CSV and fits `law` per architecture with default options
/// (`scalelab fit RESULTS.csv --law LAW`).
pub fn fit_from_csv(path: impl AsRef<Path>, law: Law) -> Result<FitReport, FitError> {
    fit_from_csv_with(path, law, &FitOptions::default())
}

/// [`fit_from_csv`] with explicit options.
pub fn fit_from_csv_with(
    path: impl AsRef<Path>,
    law: Law,
    options: &FitOptions,
) -> Result<FitReport, FitError> {
    let path = path.as_ref();
    let rows = read_results(path)?;
    fit_rows(&rows, law, options, &path.display().to_string())
}

/// Fits already-read rows (each architecture with at least two rows).
pub fn fit_rows(
    rows: &[ResultRow],
    law: Law,
    options: &FitOptions,
    source: &str,
) -> Result<FitReport, FitError> {
    options.validate()?;
    let mut by_arch: BTreeMap<&str, Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        by_arch.entry(r.arch.as_str()).or_default().push(r);
    }
    let archs: Vec<ArchFit> = by_arch
        .iter()
        .map(|(arch, rows)| fit_arch(arch, rows, law, options))
        .collect();
    let crossings = crossings(&archs, rows, options);
    Ok(FitReport {
        source: source.to_string(),
        law,
        options: options.clone(),
        archs,
        crossings,
    })
}

fn seed_for(seed: u64, arch: &str, law: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in arch.bytes().chain([b'/']).chain(law.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    seed ^ h
}

/// Groups row indices into budgets: by the planned `budget` when every row has one (a planner
/// overshoots small budgets by a few percent, so the FLOPs alone would split them); otherwise,
/// sorted by FLOPs, a row joins the current group while its FLOPs are within `tol` of the
/// group's first.
fn budgets(rows: &[&ResultRow], tol: f64) -> Vec<Vec<usize>> {
    if !rows.is_empty() && rows.iter().all(|r| r.budget.is_some()) {
        let mut by_budget: Vec<(f64, Vec<usize>)> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let b = r.budget.unwrap_or_default();
            match by_budget.iter_mut().find(|(c, _)| *c == b) {
                Some((_, g)) => g.push(i),
                None => by_budget.push((b, vec![i])),
            }
        }
        by_budget.sort_by(|a, b| a.0.total_cmp(&b.0));
        return by_budget.into_iter().map(|(_, g)| g).collect();
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_by(|a, b| rows[*a].flops.total_cmp(&rows[*b].flops));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in idx {
        match groups.last_mut() {
            Some(g) if rows[i].flops <= rows[g[0]].flops * (1.0 + tol) => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Row indices grouped into budgets exactly as the fits group them (by planned budget when every
/// row has one; else rows sorted by FLOPs, a row joining the current group while its FLOPs are
/// within `tolerance` of the group's first), so plots can draw the same IsoFLOP groups the fits
/// used.
pub fn budget_groups(rows: &[ResultRow], tolerance: f64) -> Vec<Vec<usize>> {
    let refs: Vec<&ResultRow> = rows.iter().collect();
    budgets(&refs, tolerance)
}

/// The IsoFLOP parabola the `isoflop` law fits at one budget, `y = c0 + c1 x + c2 x^2` by least
/// squares (`x = ln N` or `ln D`, `y` the loss), so plots can draw it; `None` with fewer than 3
/// distinct `x`.
pub fn isoflop_parabola(x: &[f64], y: &[f64]) -> Option<[f64; 3]> {
    stats::parabola(x, y)
}

/// The `x` at the minimum of that parabola, or why the `isoflop` law skips the budget (opens
/// downward, minimum outside the sampled range).
pub fn isoflop_minimum(x: &[f64], y: &[f64]) -> Result<f64, &'static str> {
    parabola_minimum(x, y)
}

/// The lowest-loss run of each budget, as `(C in PFLOP/s-days, loss)`; `C` is the planned
/// budget where the rows have one, else the run's FLOPs.
fn frontier(rows: &[&ResultRow], groups: &[Vec<usize>]) -> Vec<(f64, f64)> {
    groups
        .iter()
        .map(|g| {
            let best = g
                .iter()
                .min_by(|a, b| rows[**a].loss.total_cmp(&rows[**b].loss))
                .copied()
                .unwrap_or(g[0]);
            let c = rows[best].budget.unwrap_or(rows[best].flops);
            (pflops_days(c), rows[best].loss)
        })
        .collect()
}

fn fit_arch(arch: &str, rows: &[&ResultRow], law: Law, opts: &FitOptions) -> ArchFit {
    let groups = budgets(rows, opts.budget_tolerance);
    let front = frontier(rows, &groups);
    let mut fits = Vec::new();
    let rng = |name: &str| ChaCha8Rng::seed_from_u64(seed_for(opts.seed, arch, name));
    if law.includes(Law::Power) {
        fits.push(fit_power(&front, opts, &mut rng("power")));
    }
    if law.includes(Law::PowerIrreducible) {
        fits.push(fit_power_irreducible(
            &front,
            opts,
            &mut rng("power-irreducible"),
        ));
    }
    if law.includes(Law::Isoflop) {
        fits.extend(fit_isoflop(rows, &groups, opts, &mut rng("isoflop")));
    }
    if law.includes(Law::Parametric) {
        fits.push(fit_parametric(rows, opts, &mut rng("parametric")));
    }
    if law.includes(Law::Moe) {
        fits.push(fit_moe(rows, opts, &mut rng("moe")));
    }
    ArchFit {
        arch: arch.to_string(),
        runs: rows.len(),
        budgets: groups.len(),
        fits,
        paper: table2_for(arch),
    }
}

/// What every fit shares: the law's name, method, parameter names and which of them are
/// exponents whose interval must exclude 0.
struct LawSpec {
    law: &'static str,
    method: String,
    names: &'static [&'static str],
    trend: &'static [usize],
    rmse_of: &'static str,
    what: &'static str,
}

impl LawSpec {
    fn base(&self, points: usize) -> LawFit {
        LawFit {
            law: self.law.into(),
            method: self.method.clone(),
            status: FitStatus::Fitted,
            formula: None,
            params: Vec::new(),
            r2_log: None,
            rmse: None,
            rmse_of: self.rmse_of.into(),
            points,
            bootstrap_used: 0,
            notes: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// `None` when there are enough points; else the too-few report.
    fn too_few(&self, points: usize) -> Option<LawFit> {
        let needed = self.names.len() + 1;
        (points < needed).then(|| LawFit {
            status: FitStatus::TooFewPoints {
                points,
                parameters: self.names.len(),
                needed,
                what: self.what.into(),
            },
            ..self.base(points)
        })
    }

    fn failed(&self, points: usize, reason: impl Into<String>) -> LawFit {
        LawFit {
            status: FitStatus::Failed {
                reason: reason.into(),
            },
            ..self.base(points)
        }
    }

    /// Intervals from the bootstrap samples, the no-trend check, and the formula.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        points: usize,
        value: Vec<f64>,
        samples: Vec<Vec<f64>>,
        opts: &FitOptions,
        r2_log: f64,
        rmse: f64,
        formula: String,
        notes: Vec<String>,
    ) -> LawFit {
        if samples.len() < opts.bootstrap.div_ceil(2) {
            return LawFit {
                notes,
                ..self.failed(
                    points,
                    format!(
                        "only {} of {} bootstrap resamples could be fitted; add runs",
                        samples.len(),
                        opts.bootstrap
                    ),
                )
            };
        }
        let tail = (1.0 - opts.confidence) / 2.0;
        let params: Vec<Estimate> = self
            .names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let col: Vec<f64> = samples.iter().map(|s| s[k]).collect();
                Estimate {
                    name: name.to_string(),
                    value: value[k],
                    lo: stats::quantile(&col, tail),
                    hi: stats::quantile(&col, 1.0 - tail),
                }
            })
            .collect();
        let bootstrap_used = samples.len();
        if let Some(p) = self
            .trend
            .iter()
            .map(|k| &params[*k])
            .find(|p| p.lo <= 0.0 && p.hi >= 0.0)
        {
            return LawFit {
                status: FitStatus::NoTrend {
                    parameter: p.name.clone(),
                    lo: p.lo,
                    hi: p.hi,
                },
                bootstrap_used,
                notes,
                ..self.base(points)
            };
        }
        LawFit {
            formula: Some(formula),
            params,
            r2_log: Some(r2_log),
            rmse: Some(rmse),
            bootstrap_used,
            notes,
            samples,
            ..self.base(points)
        }
    }
}

fn resample(rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

fn power_formula(v: &[f64]) -> String {
    format!("L(C) = {:.4} C^{:.4}", v[0], v[1])
}

fn fit_power(front: &[(f64, f64)], opts: &FitOptions, rng: &mut ChaCha8Rng) -> LawFit {
    let spec = LawSpec {
        law: "L(C)",
        method: "log-log least squares over the lowest loss at each budget".into(),
        names: &["a", "b"],
        trend: &[1],
        rmse_of: "L",
        what: "budgets",
    };
    let n = front.len();
    if let Some(f) = spec.too_few(n) {
        return f;
    }
    let ols = |idx: &[usize]| {
        let x: Vec<f64> = idx.iter().map(|i| front[*i].0.ln()).collect();
        let y: Vec<f64> = idx.iter().map(|i| front[*i].1.ln()).collect();
        stats::line(&x, &y).map(|(c, b)| vec![c.exp(), b])
    };
    let all: Vec<usize> = (0..n).collect();
    let Some(value) = ols(&all) else {
        return spec.failed(n, "all budgets have the same compute");
    };
    let samples: Vec<Vec<f64>> = (0..opts.bootstrap)
        .filter_map(|_| ols(&resample(rng, n)))
        .collect();
    let pred: Vec<f64> = front
        .iter()
        .map(|(c, _)| value[0] * c.powf(value[1]))
        .collect();
    let obs: Vec<f64> = front.iter().map(|p| p.1).collect();
    let ln = |v: &[f64]| v.iter().map(|x| x.ln()).collect::<Vec<_>>();
    spec.finish(
        n,
        value.clone(),
        samples,
        opts,
        stats::r_squared(&ln(&obs), &ln(&pred)),
        stats::rmse(&obs, &pred),
        power_formula(&value),
        Vec::new(),
    )
}

fn fit_power_irreducible(front: &[(f64, f64)], opts: &FitOptions, rng: &mut ChaCha8Rng) -> LawFit {
    let spec = LawSpec {
        law: "L(C) = E + a C^b",
        method: "least squares on ln L over the lowest loss at each budget (L-BFGS, 12 starts)"
            .into(),
        names: &["E", "a", "b"],
        trend: &[2],
        rmse_of: "L",
        what: "budgets",
    };
    let n = front.len();
    if let Some(f) = spec.too_few(n) {
        return f;
    }
    let mut model = LseModel::new(3, 2);
    for (c, l) in front {
        model.push(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, c.ln()]], l.ln());
    }
    let min_loss = front.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mid = front[n / 2];
    let mut starts = Vec::new();
    for frac in [0.1, 0.5, 0.8, 0.95] {
        for b in [-0.05, -0.2, -0.5] {
            let e = frac * min_loss;
            let a = (mid.1 - e).max(1e-3 * mid.1);
            starts.push(vec![e.ln(), a.ln() - b * mid.0.ln(), b]);
        }
    }
    let natural = |t: &[f64]| vec![t[0].exp(), t[1].exp(), t[2]];
    let all: Vec<usize> = (0..n).collect();
    let Some((theta, _)) = minimize(&model, &all, Loss::Squared, &starts) else {
        return spec.failed(n, "the optimizer failed from every start");
    };
    let samples = (0..opts.bootstrap)
        .filter_map(|_| {
            minimize(
                &model,
                &resample(rng, n),
                Loss::Squared,
                std::slice::from_ref(&theta),
            )
            .map(|(t, _)| natural(&t))
        })
        .collect();
    let value = natural(&theta);
    let (r2, rmse) = lse_gof(&model, &theta);
    spec.finish(
        n,
        value.clone(),
        samples,
        opts,
        r2,
        rmse,
        format!("L(C) = {:.4} + {:.4} C^{:.4}", value[0], value[1], value[2]),
        Vec::new(),
    )
}

/// R^2 of `ln L` and RMSE of `L` of a fitted log-sum-exp law.
fn lse_gof(model: &LseModel, theta: &[f64]) -> (f64, f64) {
    let pred: Vec<f64> = (0..model.len()).map(|i| model.predict(theta, i)).collect();
    let exp = |v: &[f64]| v.iter().map(|x| x.exp()).collect::<Vec<_>>();
    (
        stats::r_squared(model.y(), &pred),
        stats::rmse(&exp(model.y()), &exp(&pred)),
    )
}

/// The `x` (log size) at the minimum of a parabola of loss over `x`, if the parabola opens
/// upward and its minimum lies inside the sampled range.
fn parabola_minimum(x: &[f64], y: &[f64]) -> Result<f64, &'static str> {
    let [_, c1, c2] = stats::parabola(x, y).ok_or("fewer than 3 distinct sizes")?;
    if c2 <= 0.0 {
        return Err("the parabola opens downward (no minimum)");
    }
    let xm = -c1 / (2.0 * c2);
    let (lo, hi) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    if xm < lo || xm > hi {
        return Err("the minimum lies outside the sampled sizes (extend the sweep)");
    }
    Ok(xm)
}

/// Per budget, `(C in PFLOP/s-days, N_opt, D_opt)` where both parabolas have an interior
/// minimum, from the rows `pick` selects in each group; and a note per budget.
fn isoflop_minima(
    rows: &[&ResultRow],
    groups: &[Vec<usize>],
    pick: &mut dyn FnMut(&[usize]) -> Vec<usize>,
) -> (Vec<(f64, f64, f64)>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for g in groups {
        let idx = pick(g);
        let c = pflops_days(idx.iter().map(|i| rows[*i].flops).sum::<f64>() / idx.len() as f64);
        let head = format!(
            "C = {} PFLOP/s-days ({} FLOPs), {} run{}",
            sci(c),
            sci(c * PFLOP_S_DAY),
            g.len(),
            if g.len() == 1 { "" } else { "s" }
        );
        if g.len() < 4 {
            notes.push(format!(
                "{head}: skipped, a parabola (3 parameters) needs at least 4 runs"
            ));
            continue;
        }
        let loss: Vec<f64> = idx.iter().map(|i| rows[*i].loss).collect();
        let ln_n: Vec<f64> = idx.iter().map(|i| rows[*i].activated_params.ln()).collect();
        let ln_d: Vec<f64> = idx.iter().map(|i| rows[*i].tokens.ln()).collect();
        match (
            parabola_minimum(&ln_n, &loss),
            parabola_minimum(&ln_d, &loss),
        ) {
            (Ok(n), Ok(d)) => {
                notes.push(format!(
                    "{head}: N_opt = {}, D_opt = {}",
                    sci(n.exp()),
                    sci(d.exp())
                ));
                out.push((c, n.exp(), d.exp()));
            }
            (Err(e), _) => notes.push(format!("{head}: skipped, in N {e}")),
            (_, Err(e)) => notes.push(format!("{head}: skipped, in D {e}")),
        }
    }
    (out, notes)
}

fn fit_isoflop(
    rows: &[&ResultRow],
    groups: &[Vec<usize>],
    opts: &FitOptions,
    rng: &mut ChaCha8Rng,
) -> Vec<LawFit> {
    let specs = [
        LawSpec {
            law: "N_opt(C)",
            method: "IsoFLOP parabolas of loss over ln N per budget, then log-log least squares \
                     of their minima (Chinchilla approach 2)"
                .into(),
            names: &["k", "a"],
            trend: &[1],
            rmse_of: "ln N_opt",
            what: "budgets with an interior IsoFLOP minimum",
        },
        LawSpec {
            law: "D_opt(C)",
            method: "IsoFLOP parabolas of loss over ln D per budget, then log-log least squares \
                     of their minima (Chinchilla approach 2)"
                .into(),
            names: &["k", "b"],
            trend: &[1],
            rmse_of: "ln D_opt",
            what: "budgets with an interior IsoFLOP minimum",
        },
    ];
    let (minima, notes) = isoflop_minima(rows, groups, &mut |g| g.to_vec());
    let fit = |m: &[(f64, f64, f64)], which: usize| {
        let x: Vec<f64> = m.iter().map(|p| p.0.ln()).collect();
        let y: Vec<f64> = m
            .iter()
            .map(|p| if which == 0 { p.1 } else { p.2 }.ln())
            .collect();
        stats::line(&x, &y).map(|(c, e)| (vec![c.exp(), e], x, y))
    };
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..opts.bootstrap {
        let mut pick = |g: &[usize]| {
            (0..g.len())
                .map(|_| g[rng.random_range(0..g.len())])
                .collect::<Vec<_>>()
        };
        let (m, _) = isoflop_minima(rows, groups, &mut pick);
        for (which, s) in samples.iter_mut().enumerate() {
            if let Some((v, _, _)) = fit(&m, which) {
                s.push(v);
            }
        }
    }
    specs
        .iter()
        .zip(samples)
        .enumerate()
        .map(|(which, (spec, samples))| {
            if let Some(mut f) = spec.too_few(minima.len()) {
                f.notes = notes.clone();
                return f;
            }
            let Some((value, x, y)) = fit(&minima, which) else {
                return spec.failed(minima.len(), "all budgets have the same compute");
            };
            let pred: Vec<f64> = x.iter().map(|xi| value[0].ln() + value[1] * xi).collect();
            let sym = if which == 0 { "N_opt" } else { "D_opt" };
            spec.finish(
                minima.len(),
                value.clone(),
                samples,
                opts,
                stats::r_squared(&y, &pred),
                stats::rmse(&y, &pred),
                format!("{sym}(C) = {:.2e} C^{:.4}", value[0], value[1]),
                notes.clone(),
            )
        })
        .collect()
}

/// Fits a log-sum-exp law to every row with the Huber loss, from `starts`, and bootstraps it.
fn fit_lse_rows(
    spec: &LawSpec,
    model: &LseModel,
    starts: &[Vec<f64>],
    natural: &dyn Fn(&[f64]) -> Vec<f64>,
    formula: &dyn Fn(&[f64]) -> String,
    opts: &FitOptions,
    rng: &mut ChaCha8Rng,
) -> LawFit {
    let n = model.len();
    if let Some(f) = spec.too_few(n) {
        return f;
    }
    let loss = Loss::Huber(opts.huber_delta);
    let all: Vec<usize> = (0..n).collect();
    let Some((theta, _)) = minimize(model, &all, loss, starts) else {
        return spec.failed(n, "the optimizer failed from every start");
    };
    let samples = (0..opts.bootstrap)
        .filter_map(|_| {
            minimize(model, &resample(rng, n), loss, std::slice::from_ref(&theta))
                .map(|(t, _)| natural(&t))
        })
        .collect();
    let value = natural(&theta);
    let (r2, rmse) = lse_gof(model, &theta);
    let mut notes = Vec::new();
    if spec.law == "L(N, D)" {
        let (alpha, beta) = (value[2], value[4]);
        notes.push(format!(
            "implied by C = 6ND: N_opt ~ C^{:.4}, D_opt ~ C^{:.4}",
            beta / (alpha + beta),
            alpha / (alpha + beta)
        ));
    }
    let mut fit = spec.finish(
        n,
        value.clone(),
        samples,
        opts,
        r2,
        rmse,
        formula(&value),
        notes,
    );
    if let Some(g) = fit.param("gamma").filter(|g| g.lo <= 0.0 && g.hi >= 0.0) {
        let note = format!(
            "gamma's interval [{}, {}] contains 0: the interaction term c (P_act T)^gamma is then \
             a constant that trades off with d; read d + c together",
            num(g.lo),
            num(g.hi)
        );
        fit.notes.push(note);
    }
    fit
}

fn grid(axes: &[&[f64]]) -> Vec<Vec<f64>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.iter()
            .flat_map(|p| {
                axis.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(*v);
                    q
                })
            })
            .collect()
    })
}

fn fit_parametric(rows: &[&ResultRow], opts: &FitOptions, rng: &mut ChaCha8Rng) -> LawFit {
    let spec = LawSpec {
        law: "L(N, D)",
        method: format!(
            "Huber loss (delta {}) on ln L over every run, L-BFGS from a 4x4x3x4x3 grid \
             (Chinchilla approach 3); N = activated_params, D = tokens",
            opts.huber_delta
        ),
        names: &["E", "A", "alpha", "B", "beta"],
        trend: &[2, 4],
        rmse_of: "L",
        what: "runs",
    };
    let mut model = LseModel::new(5, 3);
    for r in rows {
        let (ln_n, ln_d) = (r.activated_params.ln(), r.tokens.ln());
        model.push(
            &[
                vec![1.0, 0.0, 0.0, 0.0, 0.0],
                vec![0.0, 1.0, -ln_n, 0.0, 0.0],
                vec![0.0, 0.0, 0.0, 1.0, -ln_d],
            ],
            r.loss.ln(),
        );
    }
    let starts = grid(&[
        &[-1.0, 0.0, 0.5, 1.0],
        &[0.0, 5.0, 10.0, 15.0],
        &[0.1, 0.4, 0.8],
        &[0.0, 5.0, 10.0, 15.0],
        &[0.1, 0.4, 0.8],
    ]);
    let natural = |t: &[f64]| vec![t[0].exp(), t[1].exp(), t[2], t[3].exp(), t[4]];
    let formula = |v: &[f64]| {
        format!(
            "L(N, D) = {:.4} + {:.4e}/N^{:.4} + {:.4e}/D^{:.4}",
            v[0], v[1], v[2], v[3], v[4]
        )
    };
    fit_lse_rows(&spec, &model, &starts, &natural, &formula, opts, rng)
}

fn fit_moe(rows: &[&ResultRow], opts: &FitOptions, rng: &mut ChaCha8Rng) -> LawFit {
    let spec = LawSpec {
        law: "L(P_act, T)",
        method: format!(
            "the paper's MoE law, Huber loss (delta {}) on ln L over every run, L-BFGS from a \
             2^7 grid; P_act = activated_params, T = tokens; gamma is not trend-checked",
            opts.huber_delta
        ),
        names: &["d", "a", "alpha", "b", "beta", "c", "gamma"],
        trend: &[2, 4],
        rmse_of: "L",
        what: "runs",
    };
    let mut model = LseModel::new(7, 4);
    for r in rows {
        let (lp, lt) = (r.activated_params.ln(), r.tokens.ln());
        model.push(
            &[
                vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                vec![0.0, 1.0, lp, 0.0, 0.0, 0.0, 0.0],
                vec![0.0, 0.0, 0.0, 1.0, lt, 0.0, 0.0],
                vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, lp + lt],
            ],
            r.loss.ln(),
        );
    }
    let starts = grid(&[
        &[0.0, 0.5],
        &[2.0, 8.0],
        &[-0.1, -0.4],
        &[2.0, 8.0],
        &[-0.1, -0.4],
        &[-2.0, 4.0],
        &[-0.05, -0.2],
    ]);
    let natural = |t: &[f64]| {
        vec![
            t[0].exp(),
            t[1].exp(),
            t[2],
            t[3].exp(),
            t[4],
            t[5].exp(),
            t[6],
        ]
    };
    let formula = |v: &[f64]| {
        format!(
            "L(P_act, T) = {:.4} + {:.4e} P_act^{:.4} + {:.4e} T^{:.4} + {:.4e} (P_act T)^{:.4}",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6]
        )
    };
    fit_lse_rows(&spec, &model, &starts, &natural, &formula, opts, rng)
}

fn crossings(archs: &[ArchFit], rows: &[ResultRow], opts: &FitOptions) -> Vec<Crossing> {
    let power = |a: &ArchFit| {
        a.fits
            .iter()
            .find(|f| f.law == "L(C)" && f.is_fitted())
            .cloned()
    };
    let range = |arch: &str| {
        rows.iter()
            .filter(|r| r.arch == arch)
            .map(|r| pflops_days(r.flops))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), c| {
                (a.min(c), b.max(c))
            })
    };
    let tail = (1.0 - opts.confidence) / 2.0;
    let mut out = Vec::new();
    for (i, x) in archs.iter().enumerate() {
        for y in &archs[i + 1..] {
            let (Some(fx), Some(fy)) = (power(x), power(y)) else {
                continue;
            };
            let (a1, b1) = (fx.params[0].value, fx.params[1].value);
            let (a2, b2) = (fy.params[0].value, fy.params[1].value);
            let (rx, ry) = (range(&x.arch), range(&y.arch));
            let r = (rx.0.max(ry.0), rx.1.min(ry.1));
            let c = power_law_crossing(a1, b1, a2, b2);
            let pairs: Vec<f64> = fx
                .samples
                .iter()
                .zip(&fy.samples)
                .filter_map(|(s, t)| power_law_crossing(s[0], s[1], t[0], t[1]))
                .collect();
            let interval = (pairs.len() >= 10).then(|| {
                (
                    stats::quantile(&pairs, tail),
                    stats::quantile(&pairs, 1.0 - tail),
                )
            });
            let top = r.1.max(r.0);
            let lower_at_top = if a1 * top.powf(b1) <= a2 * top.powf(b2) {
                x.arch.clone()
            } else {
                y.arch.clone()
            };
            let paper = match (&x.paper, &y.paper) {
                (Some(p), Some(q)) => power_law_crossing(p.l_a, p.l_b, q.l_a, q.l_b),
                _ => None,
            };
            out.push(Crossing {
                a: x.arch.clone(),
                b: y.arch.clone(),
                pflops_days: c,
                flops: c.map(|c| c * PFLOP_S_DAY),
                interval,
                range: r,
                inside_range: c.is_some_and(|c| r.0 <= c && c <= r.1),
                lower_at_top,
                paper_pflops_days: paper,
            });
        }
    }
    out
}

impl FitReport {
    /// The report `scalelab fit RESULTS.csv` prints: per architecture the fitted laws in the
    /// paper's Table 2 form with intervals and goodness of fit, the paper's own numbers where the
    /// label matches, then where the `L(C)` curves cross.
    pub fn to_text(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "fits of {} (law: {}): {} architectures; {:.0}% percentile intervals from {} \
             bootstrap resamples (seed {}); C in PFLOP/s-days (1 PFLOP/s-day = 8.64e19 FLOPs)\n",
            self.source,
            self.law.name(),
            self.archs.len(),
            100.0 * o.confidence,
            o.bootstrap,
            o.seed
        );
        for a in &self.archs {
            out.push_str(&format!(
                "\n== {}: {} runs, {} budgets\n",
                a.arch, a.runs, a.budgets
            ));
            for f in &a.fits {
                out.push_str(&law_text(f));
            }
            if let Some(p) = &a.paper {
                out.push_str(&format!("  paper (Table 2, {}): {}\n", p.arch, p.to_text()));
            }
        }
        if !self.crossings.is_empty() {
            out.push_str("\nWhere the fitted L(C) = a C^b curves cross\n");
            for c in &self.crossings {
                let (lo, hi) = c.range;
                let body = match c.pflops_days {
                    None => "parallel: they never cross".to_string(),
                    Some(x) if lo > hi => format!(
                        "C = {} PFLOP/s-days ({} FLOPs), but their compute ranges do not \
                         overlap, so the crossing is an extrapolation of both",
                        sci(x),
                        sci(x * PFLOP_S_DAY)
                    ),
                    Some(x) => format!(
                        "C = {} PFLOP/s-days ({} FLOPs){}, {} the range both have data in \
                         [{}, {}]",
                        sci(x),
                        sci(x * PFLOP_S_DAY),
                        c.interval.map_or(String::new(), |(l, h)| format!(
                            ", interval [{}, {}]",
                            sci(l),
                            sci(h)
                        )),
                        if c.inside_range { "inside" } else { "outside" },
                        sci(lo),
                        sci(hi)
                    ),
                };
                out.push_str(&format!(
                    "  {} vs {}: {body}; lower at the top of the range: {}",
                    c.a, c.b, c.lower_at_top
                ));
                if let Some(p) = c.paper_pflops_days {
                    out.push_str(&format!("; the paper's curves cross at {}", sci(p)));
                }
                out.push('\n');
            }
        }
        out
    }
}

fn law_text(f: &LawFit) -> String {
    let mut out = String::new();
    match &f.status {
        FitStatus::Fitted => {
            out.push_str(&format!(
                "  {}\n",
                f.formula.as_deref().unwrap_or(f.law.as_str())
            ));
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| {
                    format!(
                        "{} = {} [{}, {}]",
                        p.name,
                        num(p.value),
                        num(p.lo),
                        num(p.hi)
                    )
                })
                .collect();
            out.push_str(&format!("      {}\n", params.join("   ")));
            out.push_str(&format!(
                "      R^2 (log) {:.4}, RMSE ({}) {:.4}; {} points, {} resamples fitted\n",
                f.r2_log.unwrap_or(f64::NAN),
                f.rmse_of,
                f.rmse.unwrap_or(f64::NAN),
                f.points,
                f.bootstrap_used
            ));
        }
        FitStatus::TooFewPoints {
            points,
            parameters,
            needed,
            what,
        } => out.push_str(&format!(
            "  {}: too few points to fit: {points} {what}, but {parameters} parameters need at \
             least {needed}\n",
            f.law
        )),
        FitStatus::NoTrend { parameter, lo, hi } => out.push_str(&format!(
            "  {}: no trend: the interval of exponent {parameter}, [{}, {}], contains 0; no law \
             is reported\n",
            f.law,
            num(*lo),
            num(*hi)
        )),
        FitStatus::Failed { reason } => {
            out.push_str(&format!("  {}: not fitted: {reason}\n", f.law))
        }
    }
    out.push_str(&format!("      ({})\n", f.method));
    for n in &f.notes {
        out.push_str(&format!("      - {n}\n"));
    }
    out
}

fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}
