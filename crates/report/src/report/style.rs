//! The figures' look: axis labels, the colors of architectures and of ordered series.

use std::collections::BTreeMap;

use crate::plot::{scale_color, Marker, Rgb};

/// Axis labels, with units, shared by the figures.
pub(super) const COMPUTE: &str = "compute C (PFLOP/s-days)";
pub(super) const LOSS: &str = "validation loss (nats/token)";
pub(super) const LOSS_BOTH: &str = "loss (nats/token): lines training, markers validation";
pub(super) const ACCURACY: &str = "accuracy (fraction correct)";
pub(super) const GRAY: Rgb = (110, 110, 110);

/// Tableau-10 colors: fixed ones for the paper's architectures, the rest in label order.
pub(super) const PALETTE: [Rgb; 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 127),
];
pub(super) const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
];

/// Colors per architecture label, the same in every figure: softmax blue, lightning orange,
/// hybrid green, dense gray, others from the palette in label order.
pub(super) fn arch_colors(archs: &[String]) -> BTreeMap<String, Rgb> {
    let fixed = |a: &str| match a.to_ascii_lowercase().as_str() {
        "softmax" => Some(PALETTE[0]),
        "lightning" => Some(PALETTE[1]),
        "hybrid" | "hybrid-lightning" => Some(PALETTE[2]),
        "dense" => Some((70, 70, 70)),
        _ => None,
    };
    let mut free = PALETTE[3..9].iter().cycle();
    archs
        .iter()
        .map(|a| (a.clone(), fixed(a).unwrap_or_else(|| *free.next().unwrap())))
        .collect()
}

/// Colors of an ordered series (budgets, small to large): viridis from dark to light green.
pub(super) fn seq_color(i: usize, n: usize) -> Rgb {
    let t = if n <= 1 {
        0.4
    } else {
        0.85 * i as f64 / (n - 1) as f64
    };
    scale_color(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_architectures_keep_their_colors() {
        let archs: Vec<String> = ["a", "hybrid", "lightning", "softmax", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = arch_colors(&archs);
        assert_eq!(c["softmax"], PALETTE[0]);
        assert_eq!(c["lightning"], PALETTE[1]);
        assert_eq!(c["hybrid"], PALETTE[2]);
        assert_ne!(c["a"], c["z"]);
        assert!(!archs[..1].iter().any(|a| PALETTE[..3].contains(&c[a])));
    }
}
