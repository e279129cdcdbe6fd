//! Reading a sweep directory: `sweep.json` (or `sweep.yaml`) for the name and kind,
//! `results.csv` for one row per run, and each run's `metrics.jsonl` for its loss curve.
//!
//! Only `results.csv` is required. Failed runs are kept aside with a note; everything else that is
//! missing or unreadable (a run's metrics, the sweep file) becomes a note, never an error, so a
//! partial sweep still gets a report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scalelab_scaling::fit::{ResultRow, REQUIRED_COLUMNS};

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

/// One finished run: the columns of `results.csv` and the loss curve of its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Line of `results.csv` the row is on (the header is line 1).
    pub line: u64,
    /// Run name.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// All parameters.
    pub params: f64,
    /// Activated non-embedding parameters (`N` of the fits).
    pub activated_params: f64,
    /// Training tokens.
    pub tokens: f64,
    /// Training FLOPs.
    pub flops: f64,
    /// The compute budget the run was planned for (the fits group by it), if the table says.
    pub budget: Option<f64>,
    /// Final validation loss (nats/token): what the fits use.
    pub loss: f64,
    /// Final training loss.
    pub train_loss: Option<f64>,
    /// Entropy rate of the synthetic corpus (the loss floor), when known.
    pub entropy_rate: Option<f64>,
    /// Wall-clock seconds.
    pub wall_secs: Option<f64>,
    /// Training throughput.
    pub tokens_per_s: Option<f64>,
    /// Share of softmax attention layers, 0..1.
    pub softmax_fraction: Option<f64>,
    /// Routed experts per MoE layer (empty for dense models).
    pub experts: Option<f64>,
    /// Experts each token visits.
    pub top_k: Option<f64>,
    /// Width of one expert.
    pub expert_width: Option<f64>,
    /// Residual mode (`prenorm`, `deepnorm`).
    pub residual: Option<String>,
    /// MQAR accuracy, 0..1.
    pub mqar: Option<f64>,
    /// Needle-in-a-haystack accuracy, 0..1.
    pub niah: Option<f64>,
    /// NIAH accuracy per `(context length, depth)` cell.
    pub niah_cells: Vec<((u64, f64), f64)>,
    /// Values of the swept axes, `(dotted path, value)`.
    pub axes: Vec<(String, String)>,
    /// The run's directory (as written, resolved against the sweep directory).
    pub run_dir: PathBuf,
    /// The loss curve from `metrics.jsonl` (empty if absent).
    pub curve: Vec<CurvePoint>,
}

impl Run {
    /// The row in the form `scalelab_scaling::fit` takes.
    pub fn result_row(&self) -> ResultRow {
        ResultRow {
            line: self.line,
            name: self.name.clone(),
            arch: self.arch.clone(),
            params: self.params,
            activated_params: self.activated_params,
            tokens: self.tokens,
            flops: self.flops,
            loss: self.loss,
            budget: self.budget,
        }
    }

    /// The compute a run stands for in budget groups: its planned budget, else its FLOPs.
    pub fn compute(&self) -> f64 {
        self.budget.unwrap_or(self.flops)
    }

    /// The value of the swept axis whose dotted path ends with `suffix`.
    pub fn axis(&self, suffix: &str) -> Option<&str> {
        self.axes
            .iter()
            .find(|(k, v)| k.ends_with(suffix) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Whether this run is a mixture-of-experts model (more than one expert, or `moe` in its
    /// label when the `experts` column is absent).
    pub fn is_moe(&self) -> bool {
        match self.experts {
            Some(e) => e > 1.0,
            None => self.arch.to_ascii_lowercase().contains("moe"),
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
                let per_token = run.flops / run.tokens;
                run.curve = parse_metrics(&text, &path, per_token, &mut sweep.notes);
            }
            Err(_) => missing.push(run.name.clone()),
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

fn parse_results(text: &str, path: &Path, dir: &Path) -> Result<Table, ReportError> {
    let csv_err = |e: csv::Error| {
        let line = e.position().map(|p| p.line());
        ReportError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        if index.insert(h.as_str(), i).is_some() {
            return Err(ReportError::DuplicateColumn {
                path: path.to_path_buf(),
                column: h.clone(),
            });
        }
    }
    let missing: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .filter(|c| !index.contains_key(**c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ReportError::MissingColumns {
            path: path.to_path_buf(),
            missing,
            found: header.clone(),
        });
    }
    let niah: Vec<(usize, (u64, f64))> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| parse_niah_column(h).map(|c| (i, c)))
        .collect();
    let mut cells: Vec<(u64, f64)> = niah.iter().map(|(_, c)| *c).collect();
    cells.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let axes: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix("axis.").map(|p| (i, p.to_string())))
        .collect();

    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    for rec in reader.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map_or(0, |p| p.line());
        let cell = |c: &str| index.get(c).and_then(|i| rec.get(*i)).unwrap_or("");
        let name = cell("name").to_string();
        let arch = cell("arch").to_string();
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
        if arch.is_empty() {
            return Err(bad(
                "arch",
                "",
                "label the run's architecture (e.g. softmax)",
            ));
        }
        // Without a status column every row is taken as finished (a plain `scalelab fit` table).
        let status = if index.contains_key("status") {
            cell("status").to_ascii_lowercase()
        } else {
            "ok".to_string()
        };
        if status != "ok" {
            skipped.push(SkippedRun {
                line,
                name,
                arch,
                status: if status.is_empty() {
                    "(empty)".into()
                } else {
                    status
                },
            });
            continue;
        }
        let positive = |c: &str| -> Result<f64, ReportError> {
            let raw = cell(c);
            match raw.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
                Ok(_) => Err(bad(
                    c,
                    raw,
                    "must be a positive finite number for a finished run (fits take its \
                     logarithm); fix it, or set status to failed",
                )),
                Err(_) => Err(bad(
                    c,
                    raw,
                    "is not a number; a finished run (status ok) needs it, e.g. 1.5e18",
                )),
            }
        };
        // Optional numbers: empty (or NaN) means not measured.
        let optional = |c: &str, lo: f64, hi: f64| -> Result<Option<f64>, ReportError> {
            let raw = cell(c);
            if raw.is_empty() {
                return Ok(None);
            }
            match raw.parse::<f64>() {
                Ok(v) if v.is_nan() => Ok(None),
                Ok(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                Ok(_) => Err(bad(c, raw, &format!("must lie in [{lo}, {hi}]"))),
                Err(_) => Err(bad(
                    c,
                    raw,
                    "is not a number (leave it empty if not measured)",
                )),
            }
        };
        let any = f64::MAX;
        let mut niah_cells = Vec::new();
        for (i, c) in &niah {
            if let Some(v) = optional(&header[*i], 0.0, 1.0)? {
                niah_cells.push((*c, v));
            }
        }
        let run_dir = match cell("run_dir") {
            "" => dir.join("runs").join(&name),
            d => {
                let p = Path::new(d);
                let joined = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                };
                if joined.is_dir() {
                    joined
                } else {
                    dir.join("runs").join(&name)
                }
            }
        };
        runs.push(Run {
            line,
            params: positive("params")?,
            activated_params: positive("activated_params")?,
            tokens: positive("tokens")?,
            flops: positive("flops")?,
            budget: optional("budget", f64::MIN_POSITIVE, any)?,
            loss: positive("loss")?,
            train_loss: optional("train_loss", 0.0, any)?,
            entropy_rate: optional("entropy_rate", 0.0, any)?,
            wall_secs: optional("wall_secs", 0.0, any)?,
            tokens_per_s: optional("tokens_per_s", 0.0, any)?,
            softmax_fraction: optional("softmax_fraction", 0.0, 1.0)?,
            experts: optional("experts", 0.0, any)?,
            top_k: optional("top_k", 0.0, any)?,
            expert_width: optional("expert_width", 0.0, any)?,
            residual: Some(cell("residual").to_ascii_lowercase()).filter(|s| !s.is_empty()),
            mqar: optional("mqar", 0.0, 1.0)?,
            niah: optional("niah", 0.0, 1.0)?,
            niah_cells,
            axes: axes
                .iter()
                .map(|(i, p)| (p.clone(), rec.get(*i).unwrap_or("").to_string()))
                .collect(),
            run_dir,
            curve: Vec::new(),
            name,
            arch,
        });
    }
    Ok(Table {
        runs,
        skipped,
        niah_cells: cells,
    })
}

/// The loss curve of one `metrics.jsonl`; malformed lines are skipped with one note per file.
fn parse_metrics(
    text: &str,
    path: &Path,
    flops_per_token: f64,
    notes: &mut Vec<String>,
) -> Vec<CurvePoint> {
    let mut out = Vec::new();
    let mut bad: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            bad.push(i + 1);
            continue;
        };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite());
        let Some(step) = v.get("step").and_then(|s| s.as_u64()) else {
            bad.push(i + 1);
            continue;
        };
        out.push(CurvePoint {
            step,
            flops: f("train/flops").or_else(|| f("train/tokens").map(|t| t * flops_per_token)),
            train_loss: f("train/loss"),
            val_loss: f("val/loss"),
            lr: f("train/lr"),
        });
    }
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
