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

/// A value of the setting `var` that is not one it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSetting {
    /// The environment variable.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// The values it takes, the default first.
    pub accepted: Vec<&'static str>,
}

impl std::fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} is not a value it takes; accepted: {} (unset: {})",
            self.var,
            self.value,
            self.accepted.join(", "),
            self.accepted[0]
        )
    }
}

impl std::error::Error for UnknownSetting {}

/// The choice `value` spells among `spellings` (the default first), or an error naming `var`
/// and the accepted values.
pub(crate) fn parse_setting<T: Copy>(
    var: &'static str,
    spellings: &[(&'static str, T)],
    value: &str,
) -> Result<T, UnknownSetting> {
    spellings
        .iter()
        .find(|(spelling, _)| *spelling == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| UnknownSetting {
            var,
            value: value.to_owned(),
            accepted: spellings.iter().map(|(s, _)| *s).collect(),
        })
}

/// `var`'s choice from the environment (unset: the first spelling's); a wrong value stops the
/// process with [`UnknownSetting`]'s message.
pub(crate) fn setting_from_env<T: Copy>(var: &'static str, spellings: &[(&'static str, T)]) -> T {
    match std::env::var(var) {
        Ok(value) => parse_setting(var, spellings, &value).unwrap_or_else(|err| panic!("{err}")),
        Err(_) => spellings[0].1,
    }
}
