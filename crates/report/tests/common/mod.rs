//! The tiny fixture sweep (`tests/fixtures/tiny-sweep/`), generated from known laws with seeded
//! noise, and helpers to write small sweep directories in tests.
//!
//! The fixture is committed so the notebooks can run on it; `fixture_is_current` checks the
//! committed files are exactly what [`generate`] writes (regenerate with
//! `SCALELAB_WRITE_FIXTURE=1 cargo test -p scalelab-report --test report fixture_is_current`).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The committed fixture sweep.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sweep")
}

/// splitmix64: a tiny seeded generator, so the fixture needs no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Exponents of the generating law `L(N, D) = E + A / N^ALPHA + B / D^BETA`.
pub const ALPHA: f64 = 0.34;
/// See [`ALPHA`].
pub const BETA: f64 = 0.28;

/// One architecture's law and layout.
#[derive(Clone, Copy)]
pub struct Arch {
    pub label: &'static str,
    pub e: f64,
    pub a: f64,
    pub b: f64,
    pub softmax_fraction: f64,
    pub experts: Option<(u32, u32, u32)>,
    pub residual: &'static str,
}

impl Arch {
    const fn dense(label: &'static str, e: f64, a: f64, b: f64, sf: f64) -> Self {
        Self {
            label,
            e,
            a,
            b,
            softmax_fraction: sf,
            experts: None,
            residual: "prenorm",
        }
    }

    pub fn loss(&self, n: f64, d: f64) -> f64 {
        self.e + self.a / n.powf(ALPHA) + self.b / d.powf(BETA)
    }

    /// The loss-minimizing `N` at `C = 6 N D`.
    pub fn n_opt(&self, c: f64) -> f64 {
        let g = (ALPHA * self.a / (BETA * self.b)).powf(1.0 / (ALPHA + BETA));
        g * (c / 6.0).powf(BETA / (ALPHA + BETA))
    }
}

pub const SOFTMAX: Arch = Arch::dense("softmax", 1.70, 110.0, 125.0, 1.0);
pub const LIGHTNING: Arch = Arch::dense("lightning", 1.68, 104.0, 118.0, 0.0);
pub const HYBRID: Arch = Arch::dense("hybrid", 1.65, 100.0, 115.0, 0.125);
/// Budgets (FLOPs) of the attention IsoFLOP sweep.
pub const BUDGETS: [f64; 4] = [1e15, 3e15, 1e16, 3e16];
/// Size multipliers around `N_opt` at each budget.
pub const SIZES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
const CONTEXTS: [u64; 4] = [256, 512, 1024, 2048];
const DEPTHS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
const EMBEDDING: f64 = 131_072.0;

struct Row {
    name: String,
    arch: Arch,
    n: f64,
    d: f64,
    budget: f64,
    axis_residual: bool,
}

fn round_to(v: f64, k: f64) -> f64 {
    (v * k).round() / k
}

/// How well an architecture retrieves: a score in 0..1 growing with size.
fn quality(arch: &Arch, n: f64) -> f64 {
    let s = ((n.log10() - 5.5) / 2.5).clamp(0.0, 1.0);
    let sf = arch.softmax_fraction;
    if sf == 0.0 {
        0.30 + 0.25 * s
    } else if sf >= 1.0 {
        0.60 + 0.38 * s
    } else {
        0.70 + 0.28 * s + 0.1 * sf
    }
}

/// NIAH accuracy at context `ctx` and depth `depth` (training context 512).
fn niah_cell(arch: &Arch, n: f64, ctx: u64, depth: f64) -> f64 {
    let q = quality(arch, n);
    let over = (ctx as f64 / 512.0).log2().max(0.0);
    let v = if arch.softmax_fraction == 0.0 {
        q * (256.0 / ctx as f64).sqrt() * (0.55 + 0.45 * depth)
    } else if arch.softmax_fraction >= 1.0 {
        q * 0.45f64.powf(over)
    } else {
        q * 0.96f64.powf(over)
    };
    v.clamp(0.0, 1.0)
}

/// Writes the fixture sweep into `dir` (which must exist and be empty).
pub fn generate(dir: &Path) {
    let mut rng = Rng::new(20_250_113);
    let mut rows: Vec<Row> = Vec::new();
    let label = |c: f64| {
        let e = c.log10().floor() as i32;
        format!("{}e{e}", (c / 10f64.powi(e)).round())
    };
    for arch in [SOFTMAX, LIGHTNING, HYBRID] {
        for c in BUDGETS {
            for (i, m) in SIZES.iter().enumerate() {
                let n = (arch.n_opt(c) * m).round();
                rows.push(Row {
                    name: format!("{}-c{}-s{i}", arch.label, label(c)),
                    arch,
                    n,
                    d: (c / (6.0 * n)).round(),
                    budget: c,
                    axis_residual: false,
                });
            }
        }
    }
    let dense = Arch::dense("dense", 1.66, 108.0, 118.0, 0.125);
    let moes = [
        Arch {
            label: "moe-e8",
            a: 97.0,
            experts: Some((8, 2, 96)),
            ..dense
        },
        Arch {
            label: "moe-e16",
            a: 92.0,
            experts: Some((16, 4, 48)),
            ..dense
        },
    ];
    for c in &BUDGETS[..3] {
        let n = dense.n_opt(*c).round();
        for arch in [dense, moes[0], moes[1]] {
            rows.push(Row {
                name: format!("{}-c{}", arch.label, label(*c)),
                arch,
                n,
                d: (c / (6.0 * n)).round(),
                budget: *c,
                axis_residual: false,
            });
        }
    }
    let ratios = [
        Arch::dense("hybrid-r0.25", 1.65, 99.0, 114.0, 0.25),
        Arch::dense("hybrid-r0.5", 1.66, 101.0, 116.0, 0.5),
    ];
    let norms = [
        Arch::dense("hybrid-prenorm", 1.65, 100.0, 115.0, 0.125),
        Arch {
            label: "hybrid-deepnorm",
            a: 96.0,
            residual: "deepnorm",
            ..Arch::dense("", 1.65, 100.0, 115.0, 0.125)
        },
    ];
    for c in &BUDGETS[1..3] {
        for arch in ratios.iter().chain(&norms) {
            let n = HYBRID.n_opt(*c).round();
            rows.push(Row {
                name: format!("{}-c{}", arch.label, label(*c)),
                arch: *arch,
                n,
                d: (c / (6.0 * n)).round(),
                budget: *c,
                axis_residual: arch.label.contains("norm"),
            });
        }
    }

    let mut csv = String::from(
        "name,arch,params,activated_params,tokens,flops,loss,train_loss,val_loss,entropy_rate,\
         status,wall_secs,tokens_per_s,softmax_fraction,experts,top_k,expert_width,residual,mqar,\
         niah",
    );
    for c in CONTEXTS {
        for d in DEPTHS {
            let _ = write!(csv, ",niah_ctx{c}_depth{d}");
        }
    }
    csv.push_str(",axis.budget,axis.model.residual,axis.model.ffn.moe.experts,run_dir\n");
    for (k, r) in rows.iter().enumerate() {
        let arch = &r.arch;
        let loss = round_to(arch.loss(r.n, r.d) * (0.003 * rng.normal()).exp(), 1e5);
        let train_loss = round_to(loss * (1.0 + 0.01 * rng.normal()), 1e5);
        let params = match arch.experts {
            Some((e, k, _)) => r.n + (e as f64 / k as f64 - 1.0) * (2.0 / 3.0) * r.n + EMBEDDING,
            None => r.n + EMBEDDING,
        }
        .round();
        let flops = 6.0 * r.n * r.d;
        let tps = round_to(4e11 / r.n, 1.0);
        let probes = arch.experts.is_none() && !arch.label.contains("norm");
        let (mqar, cells) = if probes {
            let q = quality(arch, r.n);
            let mqar = round_to((q + 0.02 * rng.normal()).clamp(0.0, 1.0), 64.0);
            let cells: Vec<f64> = CONTEXTS
                .iter()
                .flat_map(|c| DEPTHS.iter().map(move |d| (*c, *d)))
                .map(|(c, d)| {
                    round_to(
                        (niah_cell(arch, r.n, c, d) + 0.03 * rng.normal()).clamp(0.0, 1.0),
                        32.0,
                    )
                })
                .collect();
            (Some(mqar), Some(cells))
        } else {
            (None, None)
        };
        let niah = cells
            .as_ref()
            .map(|c| round_to(c.iter().sum::<f64>() / c.len() as f64, 1e4));
        let (e, tk, w) = arch.experts.map_or(
            (String::new(), String::new(), String::new()),
            |(e, k, w)| (e.to_string(), k.to_string(), w.to_string()),
        );
        let _ = write!(
            csv,
            "{},{},{params},{},{},{flops:e},{loss},{train_loss},{loss},1.5,ok,{},{tps},{},{e},{tk},{w},{},{},{}",
            r.name,
            arch.label,
            r.n,
            r.d,
            round_to(r.n * r.d / 4e11, 10.0),
            arch.softmax_fraction,
            arch.residual,
            mqar.map_or(String::new(), |v| v.to_string()),
            niah.map_or(String::new(), |v| v.to_string()),
        );
        match &cells {
            Some(c) => c.iter().for_each(|v| {
                let _ = write!(csv, ",{v}");
            }),
            None => csv.push_str(&",".repeat(CONTEXTS.len() * DEPTHS.len())),
        }
        let _ = writeln!(
            csv,
            ",{:e},{},{},runs/{}",
            r.budget,
            if r.axis_residual { arch.residual } else { "" },
            if arch.experts.is_some() {
                e.as_str()
            } else {
                ""
            },
            r.name
        );
        write_run(dir, r, loss, train_loss, k as u64);
    }
    // One failed run: no numbers, no run directory.
    let _ = writeln!(
        csv,
        "softmax-c3e16-s5,softmax,,,,,,,,,failed,,,1,,,,prenorm,,{},3e16,,,runs/softmax-c3e16-s5",
        ",".repeat(CONTEXTS.len() * DEPTHS.len())
    );
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    std::fs::write(
        dir.join("sweep.json"),
        "{\"name\": \"tiny-fixture\", \"kind\": \"fixture\", \"axes\": [\"budget\", \
         \"model.residual\", \"model.ffn.moe.experts\"], \"created\": \"2026-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sweep.yaml"),
        "# Hand-written stand-in for the sweep file of the generated fixture: every section of the\n\
         # report has data (attention IsoFLOP, hybrid ratios, MoE vs dense, granularity, norms).\n\
         name: tiny-fixture\nkind: fixture\naxes:\n  budget: [1e15, 3e15, 1e16, 3e16]\n  \
         model.residual: [prenorm, deepnorm]\n  model.ffn.moe.experts: [8, 16]\n",
    )
    .unwrap();
}

/// `runs/<name>/metrics.jsonl` (16 logged steps on the run's own law) and `summary.json`.
fn write_run(dir: &Path, r: &Row, loss: f64, train_loss: f64, seed: u64) {
    let mut rng = Rng::new(seed + 1);
    let run = dir.join("runs").join(&r.name);
    std::fs::create_dir_all(&run).unwrap();
    let steps = 16u64;
    let tokens_per_step = (r.d / steps as f64).round();
    let mut m = String::new();
    for i in 1..=steps {
        let t = tokens_per_step * i as f64;
        let last = i == steps;
        let tl = if last {
            train_loss
        } else {
            round_to(r.arch.loss(r.n, t) * (1.0 + 0.01 * rng.normal()), 1e5)
        };
        let lr = if i == 1 { 1.5e-4 } else { 3e-4 };
        let _ = write!(
            m,
            "{{\"step\": {}, \"train/loss\": {tl}, \"train/flops\": {:e}, \"train/tokens\": {t}, \"train/lr\": {lr}",
            i * 100,
            6.0 * r.n * t
        );
        if i % 4 == 0 {
            let vl = if last {
                loss
            } else {
                round_to(r.arch.loss(r.n, t) * (1.0 + 0.003 * rng.normal()), 1e5)
            };
            let _ = write!(m, ", \"val/loss\": {vl}");
        }
        m.push_str("}\n");
    }
    std::fs::write(run.join("metrics.jsonl"), m).unwrap();
    std::fs::write(
        run.join("summary.json"),
        format!(
            "{{\"name\": \"{}\", \"arch\": \"{}\", \"status\": \"ok\", \"val_loss\": {loss}}}\n",
            r.name, r.arch.label
        ),
    )
    .unwrap();
}

/// Every file under `dir`, relative, sorted; a report written into the sweep (`report/`, the
/// default output directory) is not part of it.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == dir.join("report") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A sweep directory with the given `results.csv` (and nothing else).
pub fn sweep_with_csv(csv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.csv"), csv).unwrap();
    dir
}
