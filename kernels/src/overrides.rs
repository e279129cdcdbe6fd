//! A per-thread override of a setting otherwise read once from the environment: what a test or
//! an A/B benchmark uses to run both sides of a choice in one process.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` with `slot` holding `value` on this thread, then restores what it held (also when
/// `f` panics).
pub(crate) fn with_override<T: Copy + 'static, R>(
    slot: &'static LocalKey<Cell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<Option<T>>>, Option<T>);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|o| o.set(self.1));
        }
    }
    let _restore = Restore(slot, slot.with(|o| o.replace(Some(value))));
    f()
}
