//! The paper's fitted laws (Table 2 of reference/minimax01.md), C in PFLOP/s-days, so fitted laws
//! can be printed next to them.

use serde::Serialize;

/// One row of the paper's Table 2: `L(C) = l_a C^l_b`, `N_opt(C) = n_k C^n_a`,
/// `D_opt(C) = d_k C^d_b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PaperLaws {
    /// The paper's architecture name.
    pub arch: &'static str,
    /// Coefficient of `L(C)`.
    pub l_a: f64,
    /// Exponent of `L(C)`.
    pub l_b: f64,
    /// Coefficient of `N_opt(C)`.
    pub n_k: f64,
    /// Exponent of `N_opt(C)`.
    pub n_a: f64,
    /// Coefficient of `D_opt(C)`.
    pub d_k: f64,
    /// Exponent of `D_opt(C)`.
    pub d_b: f64,
}

/// Table 2, in the paper's order.
pub const TABLE2: [PaperLaws; 3] = [
    PaperLaws {
        arch: "softmax",
        l_a: 3.7087,
        l_b: -0.0798,
        n_k: 1.82e8,
        n_a: 0.7118,
        d_k: 2.56e10,
        d_b: 0.5102,
    },
    PaperLaws {
        arch: "lightning",
        l_a: 3.5391,
        l_b: -0.0768,
        n_k: 2.74e8,
        n_a: 0.6470,
        d_k: 4.43e10,
        d_b: 0.4684,
    },
    PaperLaws {
        arch: "hybrid-lightning",
        l_a: 3.4797,
        l_b: -0.0763,
        n_k: 2.57e8,
        n_a: 0.6670,
        d_k: 3.70e10,
        d_b: 0.4707,
    },
];

/// The Table 2 row for an arch label of a results file: `softmax`, `lightning`, and `hybrid` or
/// `hybrid-lightning` (case-insensitive).
pub fn table2_for(arch: &str) -> Option<PaperLaws> {
    let a = arch.trim().to_ascii_lowercase();
    let key = if a == "hybrid" {
        "hybrid-lightning"
    } else {
        a.as_str()
    };
    TABLE2.iter().copied().find(|p| p.arch == key)
}

impl PaperLaws {
    /// The row in Table 2's notation.
    pub fn to_text(&self) -> String {
        format!(
            "L(C) = {:.4} C^{:.4}   N_opt(C) = {:.2e} C^{:.4}   D_opt(C) = {:.2e} C^{:.4}",
            self.l_a, self.l_b, self.n_k, self.n_a, self.d_k, self.d_b
        )
    }
}

/// Compute (PFLOP/s-days) where `a1 C^b1 = a2 C^b2`, or `None` for parallel laws.
pub fn power_law_crossing(a1: f64, b1: f64, a2: f64, b2: f64) -> Option<f64> {
    if b1 == b2 {
        return None;
    }
    Some(((a2.ln() - a1.ln()) / (b1 - b2)).exp())
}
