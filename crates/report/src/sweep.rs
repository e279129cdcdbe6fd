//! Reading a sweep directory: `sweep.json` (or `sweep.yaml`) for the name and kind,
//! `results.csv` for one row per run, and each run's `metrics.jsonl` for its loss curve.
//!
//! Only `results.csv` is required. Failed runs are kept aside with a note; everything else that is
//! missing or unreadable (a run's metrics, the sweep file) becomes a note, never an error, so a
//! partial sweep still gets a report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use scalelab_scaling::fit::{FitError, ResultRow};
use scalelab_scaling::record::{MetricsRecord, RecordError, ResultsTable, RunRecord, TableRow};

use crate::{BadCell, ReportError};

/// A sweep directory as read: its identity, its finished runs and the rows left out.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The sweep directory.
    pub dir: PathBuf,
    /// `name` of `sweep.json` (else `sweep.yaml`, else the directory's name).
    pub name: String,
    /// `kind` of the sweep (`attention-scaling`, `hybrid-ratio`, `moe-vs-dense`, ...), if given.
    pub kind: Option<String>,
    /// The swept axes (dotted config paths), from `sweep.json`.
    pub axes: Vec<String>,
    /// When the sweep was created, from `sweep.json`.
    pub created: Option<String>,
    /// Finished runs (`status` = ok), in file order.
    pub runs: Vec<Run>,
    /// Rows that did not finish (failed or still running): left out of every figure and fit.
    pub skipped: Vec<SkippedRun>,
    /// Remarks on partial data: unreadable sweep file, missing or malformed metrics.
    pub notes: Vec<String>,
    /// The `niah_ctx<L>_depth<P>` columns of the header, as `(L, P)`, sorted.
    pub niah_cells: Vec<(u64, f64)>,
}

/// A row of `results.csv` whose status is not `ok`.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRun {
    /// Line of `results.csv`.
    pub line: u64,
    /// Run name.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// The status as written (`failed`, ...).
    pub status: String,
}

/// How far above chance a retrieval score still reads as chance: chance itself, and at least
/// five points (a probe grid of a few hundred targets moves by about that much between seeds).
pub fn chance_margin(chance: f64) -> f64 {
    chance.max(0.05)
}

/// Whether `accuracy` is within [`chance_margin`] of `chance` (or below it).
pub fn near_chance(accuracy: f64, chance: f64) -> bool {
    accuracy <= chance + chance_margin(chance)
}

/// One finished run: its row of `results.csv` and the loss curve of its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The row as the fits take it: line, name, label and the numbers they need, all positive.
    pub row: ResultRow,
    /// Every column of the row as read, with the optional numbers checked (not-a-number read
    /// as absent) and the residual mode lower-cased.
    pub record: RunRecord,
    /// NIAH accuracy per `(context length, depth)` cell, in the header's order.
    pub niah_cells: Vec<((u64, f64), f64)>,
    /// The run's directory (as written, resolved against the sweep directory).
    pub run_dir: PathBuf,
    /// The loss curve from `metrics.jsonl` (empty if absent).
    pub curve: Vec<CurvePoint>,
}

impl Run {
    /// The row in the form `scalelab_scaling::fit` takes.
    pub fn result_row(&self) -> ResultRow {
        self.row.clone()
    }

    /// The compute a run stands for in budget groups: its planned budget, else its FLOPs.
    pub fn compute(&self) -> f64 {
        self.row.budget.unwrap_or(self.row.flops)
    }

    /// The value of the swept axis whose dotted path ends with `suffix`.
    pub fn axis(&self, suffix: &str) -> Option<&str> {
        self.record
            .axes
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v.as_str())
    }

    /// The residual mode (`prenorm`, `deepnorm`): the `residual` column, else the swept axis.
    pub fn residual(&self) -> Option<String> {
        self.record
            .residual
            .clone()
            .or_else(|| self.axis("residual").map(str::to_string))
    }

    /// MQAR accuracy, 0..1.
    pub fn mqar(&self) -> Option<f64> {
        self.record.probes.get("mqar").copied()
    }

    /// Needle-in-a-haystack accuracy, 0..1.
    pub fn niah(&self) -> Option<f64> {
        self.record.probes.get("niah").copied()
    }

    /// Retrieval scores within reach of a context-blind guess: `Some(true)` when every MQAR
    /// and NIAH mean of the run is at most [`chance_margin`] above the chance its probes
    /// recorded; `None` without scores or without a `probe_chance` column.
    pub fn retrieval_at_chance(&self) -> Option<bool> {
        let chance = self.record.probe_chance?;
        let scores: Vec<f64> = [self.mqar(), self.niah()].into_iter().flatten().collect();
        (!scores.is_empty()).then(|| scores.iter().all(|&s| near_chance(s, chance)))
    }

    /// Whether this run is a mixture-of-experts model (more than one expert, or `moe` in its
    /// label when the `experts` column is absent).
    pub fn is_moe(&self) -> bool {
        match self.record.experts {
            Some(e) => e > 1.0,
            None => self.row.arch.to_ascii_lowercase().contains("moe"),
        }
    }
}

/// One logged step of a run's `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Optimizer step.
    pub step: u64,
    /// Training FLOPs spent so far (`train/flops`, else tokens times the run's FLOPs per token).
    pub flops: Option<f64>,
    /// Training loss at this step.
    pub train_loss: Option<f64>,
    /// Validation loss (eval steps only).
    pub val_loss: Option<f64>,
    /// Learning rate.
    pub lr: Option<f64>,
}

/// Reads a sweep directory (see the crate docs for its layout).
pub fn read_sweep(dir: &Path) -> Result<Sweep, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let results = dir.join("results.csv");
    if !results.is_file() {
        return Err(ReportError::NoResults {
            dir: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&results).map_err(|source| ReportError::Io {
        path: results.clone(),
        source,
    })?;
    let mut notes = Vec::new();
    let head = read_sweep_head(dir, &mut notes);
    let table = parse_results(&text, &results, dir)?;
    let mut sweep = Sweep {
        dir: dir.to_path_buf(),
        name: head.name.unwrap_or_else(|| {
            dir.file_name()
                .map_or("sweep".into(), |n| n.to_string_lossy().into_owned())
        }),
        kind: head.kind,
        axes: head.axes,
        created: head.created,
        runs: table.runs,
        skipped: table.skipped,
        notes,
        niah_cells: table.niah_cells,
    };
    if sweep.runs.is_empty() {
        return Err(ReportError::NoFinishedRuns {
            path: results,
            rows: sweep.skipped.len(),
        });
    }
    let mut missing = Vec::new();
    for run in &mut sweep.runs {
        let path = run.run_dir.join("metrics.jsonl");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let per_token = run.row.flops / run.row.tokens;
                run.curve = parse_metrics(&text, &path, per_token, &mut sweep.notes);
            }
            Err(_) => missing.push(run.row.name.clone()),
        }
    }
    if !missing.is_empty() {
        sweep.notes.push(format!(
            "{} of {} finished runs have no metrics.jsonl (no loss curve drawn): {}",
            missing.len(),
            sweep.runs.len(),
            abbreviate(&missing, 8)
        ));
    }
    Ok(sweep)
}

/// `a, b, c and 5 more`: a list cut to `n` names.
pub(crate) fn abbreviate(names: &[String], n: usize) -> String {
    if names.len() <= n {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..n].join(", "), names.len() - n)
    }
}

#[derive(Default)]
struct Head {
    name: Option<String>,
    kind: Option<String>,
    axes: Vec<String>,
    created: Option<String>,
}

/// Name, kind and axes from `sweep.json`, else name and kind from `sweep.yaml`; problems become
/// notes (the report does not need them).
fn read_sweep_head(dir: &Path, notes: &mut Vec<String>) -> Head {
    let json = dir.join("sweep.json");
    if let Ok(text) = std::fs::read_to_string(&json) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => {
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                return Head {
                    name: s("name"),
                    kind: s("kind"),
                    created: s("created"),
                    axes: v
                        .get("axes")
                        .and_then(|a| a.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
            }
            Err(e) => notes.push(format!(
                "{} is not valid JSON ({e}); the sweep's name and kind come from sweep.yaml or \
                 the directory name",
                json.display()
            )),
        }
    }
    let mut head = Head::default();
    if let Ok(text) = std::fs::read_to_string(dir.join("sweep.yaml")) {
        // Only the top-level `name:` and `kind:` scalars are read: the file is free-form.
        for line in text.lines() {
            let unquote = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
            if let Some(v) = line.strip_prefix("name:") {
                head.name.get_or_insert_with(|| unquote(v));
            } else if let Some(v) = line.strip_prefix("kind:") {
                head.kind.get_or_insert_with(|| unquote(v));
            }
        }
    }
    head
}

struct Table {
    runs: Vec<Run>,
    skipped: Vec<SkippedRun>,
    niah_cells: Vec<(u64, f64)>,
}

/// `niah_ctx512_depth0.25` -> `(512, 0.25)`.
pub(crate) fn parse_niah_column(name: &str) -> Option<(u64, f64)> {
    let rest = name.strip_prefix("niah_ctx")?;
    let (ctx, depth) = rest.split_once("_depth")?;
    let depth: f64 = depth.parse().ok()?;
    Some((ctx.parse().ok()?, depth)).filter(|_| (0.0..=1.0).contains(&depth))
}

/// `results.csv` through [`ResultsTable`]: finished runs checked as the fits need them (and the
/// optional numbers against their ranges), the others kept aside.
fn parse_results(text: &str, path: &Path, dir: &Path) -> Result<Table, ReportError> {
    let origin = path.display().to_string();
    let table = ResultsTable::parse(text, &origin).map_err(|e| read_error(e, path))?;
    let niah: Vec<(String, (u64, f64))> = table
        .columns
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .filter_map(|h| parse_niah_column(&h).map(|c| (h, c)))
        .collect();
    let mut cells: Vec<(u64, f64)> = niah.iter().map(|(_, c)| *c).collect();
    cells.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    // Without a status column every row is taken as finished (a plain `scalelab fit` table).
    let has_status = table.has_column("status");

    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    for TableRow { line, mut record } in table.rows {
        let name = record.name.clone();
        let bad = |column: &str, value: &str, rule: &str| {
            ReportError::BadValue(Box::new(BadCell {
                path: path.to_path_buf(),
                line,
                run: name.clone(),
                column: column.to_string(),
                value: value.to_string(),
                rule: rule.to_string(),
            }))
        };
        if name.is_empty() {
            return Err(bad("name", "", "every run needs a name"));
        }
        if !seen.insert(name.clone()) {
            return Err(bad(
                "name",
                &name,
                "appears on an earlier line too; run names must be unique",
            ));
        }
        if record.arch.is_empty() {
            return Err(bad(
                "arch",
                "",
                "label the run's architecture (e.g. softmax)",
            ));
        }
        let status = match &record.status {
            _ if !has_status => "ok".to_string(),
            Some(s) => s.to_ascii_lowercase(),
            None => "(empty)".to_string(),
        };
        if status != "ok" {
            skipped.push(SkippedRun {
                line,
                name,
                arch: record.arch,
                status,
            });
            continue;
        }
        // Optional numbers: absent (or NaN) means not measured.
        let ranged = |column: &str, v: Option<f64>, lo: f64, hi: f64| match v {
            Some(v) if v.is_nan() => Ok(None),
            Some(v) if !(lo..=hi).contains(&v) => {
                let rule = match (lo, hi) {
                    (_, f64::MAX) if lo > 0.0 => "must be positive".to_string(),
                    (_, f64::MAX) => format!("must be at least {lo}"),
                    _ => format!("must lie in [{lo}, {hi}]"),
                };
                Err(bad(column, &v.to_string(), &rule))
            }
            v => Ok(v),
        };
        let mut niah_cells = Vec::new();
        for (column, cell) in &niah {
            if let Some(v) = ranged(column, record.probes.get(column).copied(), 0.0, 1.0)? {
                niah_cells.push((*cell, v));
            }
        }
        let any = f64::MAX;
        record.budget = ranged("budget", record.budget, f64::MIN_POSITIVE, any)?;
        let row = ResultRow::from_record(line, &record, &origin).map_err(|e| match e {
            FitError::NotPositive { column, value, .. } => bad(
                &column,
                &value.to_string(),
                "must be a positive finite number for a finished run (fits take its \
                 logarithm); fix it, or set status to failed",
            ),
            FitError::Read(RecordError::BadNumber { column, value, .. }) => bad(
                &column,
                &value,
                "is not a number; a finished run (status ok) needs it, e.g. 1.5e18",
            ),
            other => ReportError::Fit(other),
        })?;
        let r = &mut record;
        for (column, v, hi) in [
            ("train_loss", &mut r.train_loss, any),
            ("entropy_rate", &mut r.entropy_rate, any),
            ("wall_secs", &mut r.wall_secs, any),
            ("tokens_per_s", &mut r.tokens_per_s, any),
            ("softmax_fraction", &mut r.softmax_fraction, 1.0),
            ("experts", &mut r.experts, any),
            ("top_k", &mut r.top_k, any),
            ("expert_width", &mut r.expert_width, any),
            ("probe_chance", &mut r.probe_chance, 1.0),
        ] {
            *v = ranged(column, *v, 0.0, hi)?;
        }
        for probe in ["mqar", "niah"] {
            let v = r.probes.remove(probe);
            if let Some(v) = ranged(probe, v, 0.0, 1.0)? {
                r.probes.insert(probe.to_string(), v);
            }
        }
        r.residual = r.residual.as_deref().map(str::to_ascii_lowercase);
        let run_dir = match record.run_dir.as_deref() {
            None => dir.join("runs").join(&row.name),
            Some(d) => {
                let p = Path::new(d);
                let joined = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                };
                if joined.is_dir() {
                    joined
                } else {
                    dir.join("runs").join(&row.name)
                }
            }
        };
        runs.push(Run {
            row,
            record,
            niah_cells,
            run_dir,
            curve: Vec::new(),
        });
    }
    Ok(Table {
        runs,
        skipped,
        niah_cells: cells,
    })
}

/// A table that cannot be read, in the report's errors (the file's path, the line and the fix).
fn read_error(e: RecordError, path: &Path) -> ReportError {
    let path = path.to_path_buf();
    match e {
        RecordError::Io { path, source } => ReportError::Io { path, source },
        RecordError::Csv { line, message, .. } => ReportError::Csv {
            path,
            line,
            message,
        },
        RecordError::MissingColumns { missing, found, .. } => ReportError::MissingColumns {
            path,
            missing,
            found: found.iter().map(|h| h.to_ascii_lowercase()).collect(),
        },
        RecordError::DuplicateColumn { column, .. } => {
            ReportError::DuplicateColumn { path, column }
        }
        RecordError::BadNumber {
            line,
            name,
            column,
            value,
            ..
        } => ReportError::BadValue(Box::new(BadCell {
            path,
            line,
            run: name,
            column,
            value,
            rule: "is not a number; write a plain or scientific number such as 1.5e18 (or leave \
                   it empty if not measured)"
                .into(),
        })),
    }
}

/// The loss curve of one `metrics.jsonl`; malformed lines are skipped with one note per file.
fn parse_metrics(
    text: &str,
    path: &Path,
    flops_per_token: f64,
    notes: &mut Vec<String>,
) -> Vec<CurvePoint> {
    let (records, bad) = MetricsRecord::read_jsonl(text);
    let mut out: Vec<CurvePoint> = records
        .iter()
        .map(|r| CurvePoint {
            step: r.step,
            flops: r
                .get("train/flops")
                .or_else(|| r.get("train/tokens").map(|t| t * flops_per_token)),
            train_loss: r.get("train/loss"),
            val_loss: r.get("val/loss"),
            lr: r.get("train/lr"),
        })
        .collect();
    if !bad.is_empty() {
        let lines: Vec<String> = bad.iter().map(|l| l.to_string()).collect();
        notes.push(format!(
            "{}: skipped {} malformed line(s) (not a JSON object with an integer `step`): line {}",
            path.display(),
            bad.len(),
            abbreviate(&lines, 5)
        ));
    }
    out.sort_by_key(|p| p.step);
    out
}
