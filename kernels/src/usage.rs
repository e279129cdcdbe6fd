//! Which kernels (lightning and softmax attention) this process has launched, by name and count: what a training log
//! quotes to show that a step reached the tensor-core kernels (or did not).

use std::collections::BTreeMap;
use std::sync::Mutex;

static LAUNCHES: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts one launch of `kernel`.
pub fn record(kernel: &'static str) {
    if let Ok(mut m) = LAUNCHES.lock() {
        *m.entry(kernel).or_insert(0) += 1;
    }
}

/// Every kernel launched so far with its count, by name.
pub fn launches() -> BTreeMap<&'static str, u64> {
    LAUNCHES.lock().map(|m| m.clone()).unwrap_or_default()
}
