//! FLOP and parameter accounting, IsoFLOP planning and scaling-law fits for scalelab, with no
//! Burn dependency.
//!
//! - [`flops`]: exact matmul FLOPs per token by component, elementwise op counts, and the three
//!   conventions (exact 2mnk, Kaplan's 6N, the paper's Table 1 in [`table1`]).
//! - [`compare`]: the conventions side by side for the paper's scaling families.
//! - [`plan`]: IsoFLOP plans (runs and tokens per budget) and MoE-vs-dense matching.
//! - [`fit`]: power laws, IsoFLOP parabolas, the parametric and MoE laws, with bootstrap intervals.
//! - [`record`]: the results table a sweep writes (`results.csv`, one [`record::RunRecord`] per
//!   run) and the lines of a run's `metrics.jsonl`, with their reader and writer.
//! - [`report`]: what the `scalelab flops`, `plan` and `fit` commands call.
//!
//! The conventions and the file formats are explained in the crate's README.md.
#![warn(missing_docs)]

pub mod compare;
pub mod fit;
pub mod flops;
pub mod paper;
pub mod plan;
pub mod record;
pub mod report;
pub mod table1;
mod text;

pub use flops::{pflops_days, Convention, PFLOP_S_DAY};
