//! Number and label formats of the report's text, and small statistics of its tables.

use scalelab_scaling::fit::{FitStatus, LawFit};

/// `1.23e-4`: three significant digits in scientific notation.
pub(super) fn sci(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let e = x.abs().log10().floor() as i32;
    let m = x / 10f64.powi(e);
    let (m, e) = if format!("{:.2}", m.abs()) == "10.00" {
        (m / 10.0, e + 1)
    } else {
        (m, e)
    };
    format!("{m:.2}e{e}")
}

/// An interval end: scientific, or `unbounded` when the bootstrap produced no finite value.
pub(super) fn bound(x: f64, infinite: &str) -> String {
    if x.is_finite() {
        sci(x)
    } else {
        infinite.into()
    }
}

/// A count or size: `3.4M`, `120K`, `2.1B`, `512`.
pub(super) fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A value of a fitted parameter: 4 decimals, or scientific for large and small values.
pub(super) fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        sci(x)
    } else {
        format!("{x:.4}")
    }
}

pub(super) fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or_else(|| "".into(), f)
}

pub(super) fn acc(x: f64) -> String {
    format!("{x:.3}")
}

/// A file-name-safe form of a label.
pub(super) fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Linear-interpolated quantile of unsorted values.
pub(super) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < s.len() {
        s[i] * (1.0 - f) + s[i + 1] * f
    } else {
        s[i]
    }
}

pub(super) fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
        .collect()
}

/// The smallest and largest x of some points.
pub(super) fn x_range(pts: &[(f64, f64)]) -> (f64, f64) {
    pts.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        })
}

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Why a law was not fitted, in the fit code's words.
pub(super) fn not_fitted_reason(f: &LawFit) -> String {
    match &f.status {
        FitStatus::Fitted => "fitted".into(),
        FitStatus::TooFewPoints {
            points,
            parameters,
            needed,
            what,
        } => format!(
            "too few points: {points} {what}, but {parameters} parameters need at least {needed}"
        ),
        FitStatus::NoTrend { parameter, lo, hi } => format!(
            "no trend: the interval of exponent {parameter}, [{}, {}], contains 0",
            num(*lo),
            num(*hi)
        ),
        FitStatus::Failed { reason } => format!("failed: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(sci(1.234e-4), "1.23e-4");
        assert_eq!(sci(9.999e-5), "1.00e-4");
        assert_eq!(si(2.5e6), "2.50M");
        assert_eq!(si(120_000.0), "120.0K");
        assert_eq!(num(3.47971), "3.4797");
        assert_eq!(slug("moe-e8/top k"), "moe-e8_top_k");
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.25), 1.25);
    }
}
