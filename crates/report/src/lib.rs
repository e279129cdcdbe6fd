//! `scalelab report SWEEP_DIR`: a Markdown report with SVG figures of a finished sweep, in the
//! form of the MiniMax-01 paper's architecture comparisons.
//!
//! A sweep directory (written by `scalelab sweep`) holds `results.csv` (one row per run),
//! `sweep.json` (name, kind, swept axes) and `runs/<name>/metrics.jsonl` (one JSON object per
//! logged step). [`write_report`] reads it, fits the scaling laws with
//! [`scalelab_scaling::fit`] and writes `report.md` and the figures into `SWEEP_DIR/report/`:
//!
//! 1. loss vs compute with the fitted `L(C) = a C^b` and bootstrap bands, over the runs' loss
//!    curves;
//! 2. IsoFLOP curves with their parabolas and `N_opt`, and the fitted `N_opt(C)`, `D_opt(C)`;
//! 3. the laws in the paper's Table 2 form next to the paper's numbers, and where curves cross;
//! 4. retrieval (MQAR, NIAH) vs the share of softmax layers and vs context, NIAH heat maps;
//! 5. MoE vs dense at equal FLOPs; 6. expert granularity and PreNorm vs DeepNorm;
//! 7. every run in one table.
//!
//! Sections whose data the sweep lacks are replaced by a one-line note. Failed runs are left out
//! with a note; a sweep without `results.csv`, a malformed table or no finished run is an error.
//!
//! The command-line tool calls [`write_report`] and prints [`ReportPaths::to_text`]:
//!
//! ```no_run
//! let paths = scalelab_report::write_report(std::path::Path::new("sweeps/attn"), None)?;
//! print!("{}", paths.to_text());
//! # Ok::<(), scalelab_report::ReportError>(())
//! ```
#![warn(missing_docs)]

pub mod plot;
mod report;
pub mod sweep;

use std::path::{Path, PathBuf};

use scalelab_scaling::fit::{FitError, FitOptions};

pub use sweep::{read_sweep, CurvePoint, Run, SkippedRun, Sweep};

/// Settings of a report; the defaults are what `scalelab report` uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportOptions {
    /// Settings of the scaling-law fits (bootstrap resamples, seed, confidence, budget tolerance).
    pub fit: FitOptions,
}

/// What [`write_report`] wrote, and a short text summary for the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPaths {
    /// The output directory.
    pub dir: PathBuf,
    /// The Markdown report.
    pub report: PathBuf,
    /// The figures (SVG), in the order the report shows them.
    pub figures: Vec<PathBuf>,
    /// A few lines: runs read and skipped, the fitted `L(C)` laws, sections left out.
    pub summary: String,
}

impl ReportPaths {
    /// The summary followed by the files written: what `scalelab report` prints.
    pub fn to_text(&self) -> String {
        format!(
            "{}wrote {} and {} figure(s) in {}\n",
            self.summary,
            self.report.display(),
            self.figures.len(),
            self.dir.display()
        )
    }
}

/// Why no report could be made; each names the file (and line and column) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The sweep path is not a directory.
    #[error(
        "{path} is not a directory; pass the sweep directory (the one that holds results.csv)"
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory has no `results.csv`.
    #[error(
        "{dir} has no results.csv: it is not a sweep directory, or no run of the sweep has \
         finished yet (a sweep directory holds results.csv, sweep.json and runs/)"
    )]
    NoResults {
        /// The directory.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `results.csv` is not well-formed CSV (e.g. a row with a different number of fields).
    #[error("{path}{}: malformed CSV: {message}", .line.map_or(String::new(), |l| format!(": line {l}")))]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line, when the reader knows it.
        line: Option<u64>,
        /// The reader's message.
        message: String,
    },
    /// A column appears twice in the header.
    #[error("{path}: column `{column}` appears twice in the header; keep one")]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The column (lower case).
        column: String,
    },
    /// Required columns are absent.
    #[error(
        "{path}: missing column(s) {}; the header has: {}. A sweep's results.csv needs at least \
         name, arch, params, activated_params, tokens, flops, loss (and status)",
        .missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
        .found.join(", ")
    )]
    MissingColumns {
        /// The file.
        path: PathBuf,
        /// Absent columns.
        missing: Vec<String>,
        /// The header as read.
        found: Vec<String>,
    },
    /// A cell of a finished run is not a valid value.
    #[error(
        "{}: line {} (run `{}`): column `{}` = {:?} {}",
        .0.path.display(), .0.line, .0.run, .0.column, .0.value, .0.rule
    )]
    BadValue(Box<BadCell>),
    /// No row has status `ok`.
    #[error(
        "{path}: no finished runs ({rows} row(s), none with status ok): nothing to report; look \
         at the failed runs' logs under runs/"
    )]
    NoFinishedRuns {
        /// The file.
        path: PathBuf,
        /// Rows in the file.
        rows: usize,
    },
    /// The fits refused their options.
    #[error("fitting the sweep's results: {0}")]
    Fit(#[from] FitError),
    /// The report or a figure could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A bad cell of `results.csv`: where it is, what it holds, and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct BadCell {
    /// The file.
    pub path: PathBuf,
    /// Line of the row (the header is line 1).
    pub line: u64,
    /// Run name.
    pub run: String,
    /// The column.
    pub column: String,
    /// The cell.
    pub value: String,
    /// What is wrong and how to fix it.
    pub rule: String,
}

/// Writes the report of the sweep in `sweep_dir` into `out_dir` (default `sweep_dir/report/`):
/// `report.md` and its SVG figures. This is `scalelab report SWEEP_DIR [--out DIR]`.
pub fn write_report(sweep_dir: &Path, out_dir: Option<&Path>) -> Result<ReportPaths, ReportError> {
    write_report_with(sweep_dir, out_dir, &ReportOptions::default())
}

/// [`write_report`] with explicit options (tests use fewer bootstrap resamples).
pub fn write_report_with(
    sweep_dir: &Path,
    out_dir: Option<&Path>,
    options: &ReportOptions,
) -> Result<ReportPaths, ReportError> {
    let sweep = read_sweep(sweep_dir)?;
    let out = out_dir.map_or_else(|| sweep_dir.join("report"), Path::to_path_buf);
    let built = report::build(&sweep, options)?;
    std::fs::create_dir_all(&out).map_err(|e| ReportError::Write {
        path: out.clone(),
        message: e.to_string(),
    })?;
    let mut figures = Vec::new();
    for (file, figure) in &built.figures {
        let path = out.join(file);
        plot::render_svg(figure, &path).map_err(|message| ReportError::Write {
            path: path.clone(),
            message,
        })?;
        figures.push(path);
    }
    let report = out.join("report.md");
    std::fs::write(&report, &built.markdown).map_err(|e| ReportError::Write {
        path: report.clone(),
        message: e.to_string(),
    })?;
    Ok(ReportPaths {
        dir: out,
        report,
        figures,
        summary: built.summary,
    })
}
