//! One module per subcommand: argument struct and `run`.

pub mod bench;
pub mod calibrate;
pub mod fit;
pub mod flops;
pub mod params;
pub mod plan;
pub mod report;
pub mod sweep;
pub mod train;
