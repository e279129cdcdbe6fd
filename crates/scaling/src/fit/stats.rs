//! Small closed-form fits and summaries: least-squares lines and parabolas, percentiles,
//! goodness of fit.

/// Least-squares line `y = intercept + slope * x`; `None` when `x` has no spread.
pub(crate) fn line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    if sxx <= 1e-12 * n {
        return None;
    }
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Least-squares parabola `y = c0 + c1 x + c2 x^2`, on `x` centred for conditioning; `None` when
/// the normal equations are singular (fewer than three distinct `x`).
pub(crate) fn parabola(x: &[f64], y: &[f64]) -> Option<[f64; 3]> {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for (&xi, &yi) in x.iter().zip(y) {
        let u = xi - m;
        let p = [1.0, u, u * u];
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += p[i] * p[j];
            }
            b[i] += p[i] * yi;
        }
    }
    let [c0, c1, c2] = solve3(a, b)?;
    // Back from u = x - m to x.
    Some([c0 - c1 * m + c2 * m * m, c1 - 2.0 * c2 * m, c2])
}

fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    let scale: f64 = a.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max);
    if d.abs() <= 1e-12 * scale.powi(3) {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *o = det(m) / d;
    }
    Some(out)
}

/// The `q`-quantile (0..=1) of `v` by linear interpolation; `v` need not be sorted.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// R^2 of predictions `p` against observations `y`.
pub(crate) fn r_squared(y: &[f64], p: &[f64]) -> f64 {
    let m = y.iter().sum::<f64>() / y.len() as f64;
    let ss_res: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|a| (a - m).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// Root-mean-square of `y - p`.
pub(crate) fn rmse(y: &[f64], p: &[f64]) -> f64 {
    (y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_parabola_recover_exact_coefficients() {
        let x: Vec<f64> = (0..6).map(|i| 10.0 + i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 - 0.5 * v).collect();
        let (a, b) = line(&x, &y).unwrap();
        assert!((a - 2.0).abs() < 1e-9 && (b + 0.5).abs() < 1e-12, "{a} {b}");
        let y: Vec<f64> = x.iter().map(|v| 1.0 + 0.3 * v - 0.02 * v * v).collect();
        let c = parabola(&x, &y).unwrap();
        for (got, want) in c.iter().zip([1.0, 0.3, -0.02]) {
            assert!((got - want).abs() < 1e-8, "{c:?}");
        }
        assert!(line(&[1.0, 1.0], &[1.0, 2.0]).is_none());
        assert!(parabola(&[1.0, 2.0, 1.0, 2.0], &[1.0, 2.0, 3.0, 4.0]).is_none());
    }

    #[test]
    fn quantile_interpolates() {
        let v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert!((quantile(&v, 0.125) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn goodness_of_fit() {
        let y = [1.0, 2.0, 3.0];
        assert_eq!(r_squared(&y, &y), 1.0);
        assert!((r_squared(&y, &[2.0, 2.0, 2.0])).abs() < 1e-12);
        assert!((rmse(&y, &[1.0, 2.0, 4.0]) - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
