//! [`ScanOptions`]: which of the four scans of lightning attention one scan call computes. A
//! module of its own so that the references, the dispatch and the kernels read it without
//! importing one another.

/// How one [`LightningBackend::lightning_scan`](super::LightningBackend::lightning_scan) runs;
/// [`reference::scan`](super::reference::scan) gives the function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScanOptions {
    /// Run time backwards (`t -> n-1-t`): the reverse loop of the backward pass.
    pub reverse: bool,
    /// Read the initial state transposed (`[.., dc, da]` instead of `[.., da, dc]`).
    pub transpose_state: bool,
    /// Give the initial state the decay `lambda^t` instead of `lambda^(t+1)` (the reverse
    /// gradient scans); the state written out is then multiplied by `lambda` once more.
    pub state_exp0: bool,
}

impl ScanOptions {
    /// The `dq` scan: forward `(do, v, k)` from the initial state transposed.
    pub const DQ: Self = Self {
        reverse: false,
        transpose_state: true,
        state_exp0: false,
    };
    /// The `dk` scan: reverse `(v, do, q)` from `dS_n^T`.
    pub const DK: Self = Self {
        reverse: true,
        transpose_state: true,
        state_exp0: true,
    };
    /// The `dv` scan: reverse `(k, q, do)` from `dS_n`; its final state is `dS0`.
    pub const DV: Self = Self {
        reverse: true,
        transpose_state: false,
        state_exp0: true,
    };
}
