//! What a run leaves on disk, as types: [`RunRecord`] is one row of a sweep's `results.csv`
//! (written by the sweep, read by `scalelab fit` and the report), and [`MetricsRecord`] one line of
//! a run's `metrics.jsonl` (written by the trainer, read by the report and `scalelab bench`).
//!
//! `results.csv` has, in this order: the fixed columns (`name`, `arch`, `params`,
//! `activated_params`, `tokens`, `flops`, `budget`, `loss`, `train_loss`, `val_loss`,
//! `entropy_rate`, `status`, `wall_secs`, `tokens_per_s`, `softmax_fraction`, `experts`, `top_k`,
//! `expert_width`, `residual`, `probe_chance`), the probe scores ([`is_probe_column`]), one `axis.<path>` per swept
//! axis, and `run_dir`. Only the [`REQUIRED_COLUMNS`] must be present; column names are matched
//! case-insensitively (and lower-cased), unknown columns are ignored, lines starting with `#` are
//! comments, and an empty cell is an absent value.

mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use metrics::MetricsRecord;

/// The columns every results table must have (by header name; order free).
pub const REQUIRED_COLUMNS: [&str; 7] = [
    "name",
    "arch",
    "params",
    "activated_params",
    "tokens",
    "flops",
    "loss",
];

/// The last column of a written table: the run's directory, relative to the sweep directory.
const RUN_DIR: &str = "run_dir";

/// The prefix of the columns that hold a swept axis's value (`axis.model.layers`).
const AXIS: &str = "axis.";

/// One run of a results table. Numbers are `None` where the cell is empty: a failed run has no
/// loss, a dense model no expert width, a hand-written table no `budget`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecord {
    /// Run or config name.
    pub name: String,
    /// Architecture label; fits are made per label.
    pub arch: String,
    /// All parameters.
    pub params: Option<f64>,
    /// Activated non-embedding parameters (`N` of the fits).
    pub activated_params: Option<f64>,
    /// Training tokens.
    pub tokens: Option<f64>,
    /// Training FLOPs.
    pub flops: Option<f64>,
    /// The compute budget the run was planned for (fits group runs by it).
    pub budget: Option<f64>,
    /// Final loss: what the fits use (the sweep writes the validation loss).
    pub loss: Option<f64>,
    /// Final training loss.
    pub train_loss: Option<f64>,
    /// Final validation loss.
    pub val_loss: Option<f64>,
    /// Entropy rate of the synthetic corpus (the loss floor), when known.
    pub entropy_rate: Option<f64>,
    /// `ok`, `failed`, ... (a table without the column counts every row as finished).
    pub status: Option<String>,
    /// Training wall-clock seconds.
    pub wall_secs: Option<f64>,
    /// Training throughput.
    pub tokens_per_s: Option<f64>,
    /// Share of softmax attention layers, 0..1.
    pub softmax_fraction: Option<f64>,
    /// Routed experts per MoE layer (0 for dense models).
    pub experts: Option<f64>,
    /// Experts each token visits (0 for dense models).
    pub top_k: Option<f64>,
    /// Width of one expert.
    pub expert_width: Option<f64>,
    /// Residual mode (`prenorm`, `deepnorm`).
    pub residual: Option<String>,
    /// Accuracy of a context-blind guess on the retrieval probes (`1 / |values|`), so that a
    /// report can tell a score from chance.
    pub probe_chance: Option<f64>,
    /// Probe accuracies by column (`mqar`, `niah_ctx512_depth0.5`, ...).
    pub probes: BTreeMap<String, f64>,
    /// Values of the swept axes by dotted config path (the column without `axis.`).
    pub axes: BTreeMap<String, String>,
    /// The run's directory as written (relative to the sweep directory).
    pub run_dir: Option<String>,
}

/// The field of a [`RunRecord`] that a fixed column fills.
enum Slot<'a> {
    Text(&'a mut String),
    Label(&'a mut Option<String>),
    Number(&'a mut Option<f64>),
}

/// Lends the field of one fixed column (the writer lends from a copy of the record).
type Access = for<'a> fn(&'a mut RunRecord) -> Slot<'a>;

/// The fixed columns, in the order they are written, with their fields.
const FIXED: [(&str, Access); 20] = [
    ("name", |r| Slot::Text(&mut r.name)),
    ("arch", |r| Slot::Text(&mut r.arch)),
    ("params", |r| Slot::Number(&mut r.params)),
    ("activated_params", |r| {
        Slot::Number(&mut r.activated_params)
    }),
    ("tokens", |r| Slot::Number(&mut r.tokens)),
    ("flops", |r| Slot::Number(&mut r.flops)),
    ("budget", |r| Slot::Number(&mut r.budget)),
    ("loss", |r| Slot::Number(&mut r.loss)),
    ("train_loss", |r| Slot::Number(&mut r.train_loss)),
    ("val_loss", |r| Slot::Number(&mut r.val_loss)),
    ("entropy_rate", |r| Slot::Number(&mut r.entropy_rate)),
    ("status", |r| Slot::Label(&mut r.status)),
    ("wall_secs", |r| Slot::Number(&mut r.wall_secs)),
    ("tokens_per_s", |r| Slot::Number(&mut r.tokens_per_s)),
    ("softmax_fraction", |r| {
        Slot::Number(&mut r.softmax_fraction)
    }),
    ("experts", |r| Slot::Number(&mut r.experts)),
    ("top_k", |r| Slot::Number(&mut r.top_k)),
    ("expert_width", |r| Slot::Number(&mut r.expert_width)),
    ("residual", |r| Slot::Label(&mut r.residual)),
    ("probe_chance", |r| Slot::Number(&mut r.probe_chance)),
];

/// Whether a column holds a probe score: `mqar`, `niah`, `mqar_pairs<N>`, `niah_ctx<L>_depth<D>`
/// (the names the trainer's probes give their scores).
pub fn is_probe_column(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["mqar", "niah"]
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}_")))
}

/// A results table as read: its header and its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsTable {
    /// The header as written (case kept): errors quote it, readers look for optional columns.
    pub columns: Vec<String>,
    /// The rows, in file order.
    pub rows: Vec<TableRow>,
}

/// One row of a [`ResultsTable`] and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// Line of the file (the header is line 1).
    pub line: u64,
    /// The row.
    pub record: RunRecord,
}

/// Why a results table cannot be read; each names the file, the line or column, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
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
        /// The line, when the CSV reader knows it.
        line: Option<u64>,
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
        /// The column (lower case).
        column: String,
    },
    /// A cell of a numeric column is not a number.
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
        /// The column (lower case).
        column: String,
        /// The cell.
        value: String,
    },
}

/// A results table could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file (the temporary one, or the table when renaming onto it failed).
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

fn quote_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a header column is to the reader.
enum Column {
    Fixed(Access),
    Probe(String),
    Axis(String),
    RunDir,
}

impl Column {
    /// The column of a lower-cased header name; `None` for columns the schema does not know.
    fn of(name: &str) -> Option<Self> {
        if let Some((_, access)) = FIXED.iter().find(|(n, _)| *n == name) {
            Some(Self::Fixed(*access))
        } else if let Some(path) = name.strip_prefix(AXIS) {
            Some(Self::Axis(path.to_string()))
        } else if name == RUN_DIR {
            Some(Self::RunDir)
        } else {
            is_probe_column(name).then(|| Self::Probe(name.to_string()))
        }
    }
}

impl ResultsTable {
    /// Reads a results CSV file.
    pub fn read(path: &Path) -> Result<Self, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads a results table given as CSV text; errors are prefixed with `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RecordError> {
        let csv_err = |e: csv::Error| RecordError::Csv {
            origin: origin.to_string(),
            line: e.position().map(|p| p.line()),
            message: e.to_string(),
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let columns: Vec<String> = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(str::to_string)
            .collect();
        let mut seen = BTreeSet::new();
        let mut known = Vec::new();
        for (i, h) in columns.iter().enumerate() {
            let key = h.to_ascii_lowercase();
            let Some(column) = Column::of(&key) else {
                continue;
            };
            if !seen.insert(key.clone()) {
                return Err(RecordError::DuplicateColumn {
                    origin: origin.to_string(),
                    column: key,
                });
            }
            known.push((i, key, column));
        }
        let missing: Vec<String> = REQUIRED_COLUMNS
            .iter()
            .filter(|c| !seen.contains(**c))
            .map(|c| c.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(RecordError::MissingColumns {
                origin: origin.to_string(),
                missing,
                found: columns,
            });
        }
        let name_at = known.iter().find(|(_, k, _)| k == "name").map(|c| c.0);
        let mut rows = Vec::new();
        for rec in reader.records() {
            let rec = rec.map_err(csv_err)?;
            let line = rec.position().map_or(0, |p| p.line());
            let name = name_at.and_then(|i| rec.get(i)).unwrap_or("");
            let mut record = RunRecord::default();
            for (i, key, column) in &known {
                let cell = rec.get(*i).unwrap_or("");
                let number = || -> Result<Option<f64>, RecordError> {
                    if cell.is_empty() {
                        return Ok(None);
                    }
                    cell.parse().map(Some).map_err(|_| RecordError::BadNumber {
                        origin: origin.to_string(),
                        line,
                        name: name.to_string(),
                        column: key.clone(),
                        value: cell.to_string(),
                    })
                };
                match column {
                    Column::Fixed(access) => match access(&mut record) {
                        Slot::Text(t) => *t = cell.to_string(),
                        Slot::Label(l) => *l = label(cell),
                        Slot::Number(n) => *n = number()?,
                    },
                    Column::Probe(p) => {
                        if let Some(v) = number()? {
                            record.probes.insert(p.clone(), v);
                        }
                    }
                    Column::Axis(a) => {
                        if !cell.is_empty() {
                            record.axes.insert(a.clone(), cell.to_string());
                        }
                    }
                    Column::RunDir => record.run_dir = label(cell),
                }
            }
            rows.push(TableRow { line, record });
        }
        Ok(Self { columns, rows })
    }

    /// Whether the header has `column` (matched case-insensitively).
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.eq_ignore_ascii_case(column))
    }
}

/// An optional text cell: `None` when empty.
fn label(cell: &str) -> Option<String> {
    Some(cell.to_string()).filter(|s| !s.is_empty())
}

/// A number as written: Rust's shortest round-trip form, empty when absent or not finite.
fn number_cell(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or(String::new(), |v| format!("{v}"))
}

/// Writes `records` to `path` atomically (a temporary file beside it, then a rename). The header:
/// the fixed columns, every probe column and axis any record has (sorted), then `run_dir`.
/// Non-finite numbers are written as empty cells, so they read back as `None`.
pub fn write_records(path: &Path, records: &[RunRecord]) -> Result<(), WriteError> {
    let probes: BTreeSet<&String> = records.iter().flat_map(|r| r.probes.keys()).collect();
    let axes: BTreeSet<&String> = records.iter().flat_map(|r| r.axes.keys()).collect();
    let mut header: Vec<String> = FIXED.iter().map(|(n, _)| n.to_string()).collect();
    header.extend(probes.iter().map(|p| p.to_string()));
    header.extend(axes.iter().map(|a| format!("{AXIS}{a}")));
    header.push(RUN_DIR.into());
    let rows = records.iter().map(|record| {
        let mut r = record.clone();
        let mut row: Vec<String> = FIXED
            .iter()
            .map(|(_, access)| match access(&mut r) {
                Slot::Text(t) => t.clone(),
                Slot::Label(l) => l.clone().unwrap_or_default(),
                Slot::Number(n) => number_cell(*n),
            })
            .collect();
        row.extend(
            probes
                .iter()
                .map(|p| number_cell(r.probes.get(*p).copied())),
        );
        row.extend(
            axes.iter()
                .map(|a| r.axes.get(*a).cloned().unwrap_or_default()),
        );
        row.push(r.run_dir.unwrap_or_default());
        row
    });
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_csv(&tmp, &header, rows).map_err(|e| WriteError {
        path: tmp.clone(),
        source: e.into(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

fn write_csv(
    path: &Path,
    header: &[String],
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(header)?;
    for row in rows {
        w.write_record(&row)?;
    }
    Ok(w.flush()?)
}
