//! The rows the fits take: the required columns of a results table (read by
//! [`crate::record`]), checked for what a fit needs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::record::{RecordError, ResultsTable, RunRecord};

/// One run of a results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// Line of the file the row is on (the header is line 1).
    pub line: u64,
    /// Run or config name.
    pub name: String,
    /// Architecture label; fits are made per label.
    pub arch: String,
    /// All parameters (reported, not fitted).
    pub params: f64,
    /// Activated non-embedding parameters: `N` of the fits (`P_act` of the MoE law).
    pub activated_params: f64,
    /// Training tokens `D` (`T` of the MoE law).
    pub tokens: f64,
    /// Training FLOPs `C`.
    pub flops: f64,
    /// Final loss.
    pub loss: f64,
    /// The compute budget the run was planned for (the optional `budget` column, which
    /// `scalelab sweep` writes): fits group runs by it. Without it, runs whose FLOPs agree
    /// within the fit's tolerance form a budget.
    pub budget: Option<f64>,
}

/// Why a results table cannot be fitted; each names the file, the row or column, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The table could not be read (file, CSV, header or a cell that is not a number).
    #[error(transparent)]
    Read(#[from] RecordError),
    /// A value that is fitted in log space is zero or negative (or not finite).
    #[error(
        "{origin}: line {line} (run `{name}`): column `{column}` = {value} must be a positive \
         finite number (fits take its logarithm); fix the value or remove the row"
    )]
    NotPositive {
        /// The file.
        origin: String,
        /// Line of the row.
        line: u64,
        /// Run name.
        name: String,
        /// The column.
        column: String,
        /// The value.
        value: f64,
    },
    /// A row has an empty architecture label.
    #[error("{origin}: line {line}: column `arch` is empty; label the run (e.g. softmax)")]
    EmptyArch {
        /// The file.
        origin: String,
        /// Line of the row.
        line: u64,
    },
    /// The table has a header but no rows.
    #[error("{origin}: no data rows; add one row per training run below the header")]
    Empty {
        /// The file.
        origin: String,
    },
    /// An architecture has a single run: no law can be fitted to one point.
    #[error(
        "{origin}: architecture `{arch}` has a single run (line {line}); a fit needs several \
         runs per architecture (several budgets, several sizes): add runs or remove the row"
    )]
    SinglePoint {
        /// The file.
        origin: String,
        /// The label.
        arch: String,
        /// Line of its only row.
        line: u64,
    },
    /// `--law` names no law.
    #[error("unknown law {given:?}; the laws are: {}", crate::fit::Law::NAMES.join(", "))]
    UnknownLaw {
        /// What was given.
        given: String,
    },
    /// A fit option is out of range.
    #[error("fit option {option} = {value}: {rule}")]
    BadOption {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// The rule.
        rule: &'static str,
    },
}

impl ResultRow {
    /// The fit's row of `record` (on `line` of `origin`): `arch` must be set, and `params`,
    /// `activated_params`, `tokens`, `flops`, `loss` (and `budget` if given) positive and finite.
    pub fn from_record(line: u64, record: &RunRecord, origin: &str) -> Result<Self, FitError> {
        if record.arch.is_empty() {
            return Err(FitError::EmptyArch {
                origin: origin.to_string(),
                line,
            });
        }
        let positive = |column: &str, v: Option<f64>| -> Result<f64, FitError> {
            let Some(v) = v else {
                return Err(FitError::Read(RecordError::BadNumber {
                    origin: origin.to_string(),
                    line,
                    name: record.name.clone(),
                    column: column.to_string(),
                    value: String::new(),
                }));
            };
            if !(v > 0.0 && v.is_finite()) {
                return Err(FitError::NotPositive {
                    origin: origin.to_string(),
                    line,
                    name: record.name.clone(),
                    column: column.to_string(),
                    value: v,
                });
            }
            Ok(v)
        };
        Ok(Self {
            line,
            name: record.name.clone(),
            arch: record.arch.clone(),
            budget: record
                .budget
                .map(|b| positive("budget", Some(b)))
                .transpose()?,
            params: positive("params", record.params)?,
            activated_params: positive("activated_params", record.activated_params)?,
            tokens: positive("tokens", record.tokens)?,
            flops: positive("flops", record.flops)?,
            loss: positive("loss", record.loss)?,
        })
    }
}

/// Reads a results CSV file.
pub fn read_results(path: impl AsRef<Path>) -> Result<Vec<ResultRow>, FitError> {
    let path = path.as_ref();
    rows_of(ResultsTable::read(path)?, &path.display().to_string())
}

/// Reads a results table given as CSV text; errors are prefixed with `origin`.
pub fn read_results_str(text: &str, origin: &str) -> Result<Vec<ResultRow>, FitError> {
    rows_of(ResultsTable::parse(text, origin)?, origin)
}

/// The fit's rows of a table: every row valid, and at least two per architecture.
fn rows_of(table: ResultsTable, origin: &str) -> Result<Vec<ResultRow>, FitError> {
    let rows = table
        .rows
        .iter()
        .map(|r| ResultRow::from_record(r.line, &r.record, origin))
        .collect::<Result<Vec<_>, _>>()?;
    if rows.is_empty() {
        return Err(FitError::Empty {
            origin: origin.to_string(),
        });
    }
    let mut per_arch: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &rows {
        per_arch.entry(&r.arch).or_default().push(r.line);
    }
    if let Some((arch, lines)) = per_arch.iter().find(|(_, l)| l.len() == 1) {
        return Err(FitError::SinglePoint {
            origin: origin.to_string(),
            arch: arch.to_string(),
            line: lines[0],
        });
    }
    Ok(rows)
}
