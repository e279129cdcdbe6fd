//! Cross-crate integration tests of scalelab live in `tests/tests/`; this crate has no code.
