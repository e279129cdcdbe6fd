//! One module per subcommand: argument struct and `run`.

pub mod fit;
pub mod flops;
pub mod params;
pub mod plan;
