//! TensorBoard event files for scalelab runs: scalars, histograms, text and hparams.
//!
//! A small writer on `prost` (messages derived by hand, no `protoc`) and `crc32c` (TFRecord
//! framing).

pub mod proto;
pub mod record;
