//! Reading a results table: one row per training run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The columns a results CSV must have (by header name; order free, extra columns ignored).
pub const REQUIRED_COLUMNS: [&str; 7] = [
    "name",
    "arch",
    "params",
    "activated_params",
    "tokens",
    "flops",
    "loss",
];

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
    /// The file could not be read.
    #[error("cannot read results file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV itself is malformed (e.g. a row with a different number of fields).
    #[error("{origin}: not a well-formed CSV: {message}")]
    Csv {
        /// The file.
        origin: String,
        /// The reader's message, with the line.
        message: String,
    },
    /// Required columns are absent from the header.
    #[error(
        "{origin}: missing column(s) {}; the header has: {}. Add the missing column(s) (names \
         are matched case-insensitively; see crates/scaling/README.md)",
        quote_list(.missing), .found.join(", ")
    )]
    MissingColumns {
        /// The file.
        origin: String,
        /// Absent required columns.
        missing: Vec<String>,
        /// The header as read.
        found: Vec<String>,
    },
    /// A column name appears twice.
    #[error("{origin}: column `{column}` appears twice in the header; keep one")]
    DuplicateColumn {
        /// The file.
        origin: String,
        /// The column.
        column: String,
    },
    /// A cell is not a number.
    #[error(
        "{origin}: line {line} (run `{name}`): column `{column}` = {value:?} is not a number; \
         write a plain or scientific number such as 1.5e18"
    )]
    BadNumber {
        /// The file.
        origin: String,
        /// Line of the row.
        line: u64,
        /// Run name.
        name: String,
        /// The column.
        column: String,
        /// The cell.
        value: String,
    },
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

fn quote_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a results CSV file.
pub fn read_results(path: impl AsRef<Path>) -> Result<Vec<ResultRow>, FitError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| FitError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_results_str(&text, &path.display().to_string())
}

/// Reads a results table given as CSV text; errors are prefixed with `origin`.
pub fn read_results_str(text: &str, origin: &str) -> Result<Vec<ResultRow>, FitError> {
    let csv_err = |e: csv::Error| FitError::Csv {
        origin: origin.to_string(),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut index = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        let key = h.to_ascii_lowercase();
        let known = REQUIRED_COLUMNS.contains(&key.as_str()) || key == "budget";
        if known && index.insert(key.clone(), i).is_some() {
            return Err(FitError::DuplicateColumn {
                origin: origin.to_string(),
                column: key,
            });
        }
    }
    let missing: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .filter(|c| !index.contains_key(**c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(FitError::MissingColumns {
            origin: origin.to_string(),
            missing,
            found: header,
        });
    }
    let col = |c: &str| index.get(c).copied().unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map_or(0, |p| p.line());
        let cell = |c: &str| rec.get(col(c)).unwrap_or("").to_string();
        let name = cell("name");
        let arch = cell("arch");
        if arch.is_empty() {
            return Err(FitError::EmptyArch {
                origin: origin.to_string(),
                line,
            });
        }
        let number = |c: &str| -> Result<f64, FitError> {
            let raw = cell(c);
            let v: f64 = raw.parse().map_err(|_| FitError::BadNumber {
                origin: origin.to_string(),
                line,
                name: name.clone(),
                column: c.to_string(),
                value: raw.clone(),
            })?;
            if !(v > 0.0 && v.is_finite()) {
                return Err(FitError::NotPositive {
                    origin: origin.to_string(),
                    line,
                    name: name.clone(),
                    column: c.to_string(),
                    value: v,
                });
            }
            Ok(v)
        };
        let budget = match cell("budget").as_str() {
            "" => None,
            _ => Some(number("budget")?),
        };
        rows.push(ResultRow {
            line,
            budget,
            params: number("params")?,
            activated_params: number("activated_params")?,
            tokens: number("tokens")?,
            flops: number("flops")?,
            loss: number("loss")?,
            name,
            arch,
        });
    }
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
