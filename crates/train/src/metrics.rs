//! Where metrics go: `metrics.jsonl` (one object per logged step) and TensorBoard event files.
//!
//! Scalars are logged against the optimizer step; the `by_flops/` copies of the loss curves use
//! cumulative training GFLOPs as their step, so TensorBoard can plot loss against compute.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use scalelab_scaling::record::MetricsRecord;
use scalelab_tensorboard::{HParamValue, SessionStatus, SummaryWriter};

use crate::error::TrainError;

/// The metrics sinks of one run directory.
pub struct MetricsLog {
    path: PathBuf,
    jsonl: BufWriter<File>,
    tb: SummaryWriter,
}

impl MetricsLog {
    /// Opens the sinks in `run_dir`. When resuming from `resume_step`, lines logged after that
    /// step (by the interrupted run, and about to be logged again identically) are dropped.
    pub fn open(run_dir: &Path, resume_step: Option<u64>) -> Result<Self, TrainError> {
        let path = run_dir.join("metrics.jsonl");
        if let Some(step) = resume_step {
            truncate_after(&path, step)?;
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        let tb_dir = run_dir.join("tensorboard");
        let mut tb = SummaryWriter::create(&tb_dir).map_err(|e| TrainError::io(&tb_dir, e))?;
        if let Some(step) = resume_step {
            // Supersedes what the interrupted attempt logged after the checkpoint.
            tb.session_start(step + 1)
                .map_err(|e| TrainError::io(&tb_dir, e))?;
        }
        Ok(Self {
            path,
            jsonl: BufWriter::new(file),
            tb,
        })
    }

    /// Writes one record (a line of `metrics.jsonl`, and TensorBoard events at its step);
    /// `gflops` is the cumulative training GFLOPs so far.
    pub fn log(&mut self, gflops: f64, record: &MetricsRecord) -> Result<(), TrainError> {
        let step = record.step;
        writeln!(self.jsonl, "{}", record.to_json_line())
            .map_err(|e| TrainError::io(&self.path, e))?;
        let io = |e| TrainError::io(self.path.with_file_name("tensorboard"), e);
        for (tag, v) in &record.scalars {
            self.tb.add_scalar(tag, step, *v).map_err(io)?;
            if tag.ends_with("loss") && !tag.starts_with("moe/") {
                self.tb
                    .add_scalar(&format!("by_flops/{tag}"), gflops.round() as u64, *v)
                    .map_err(io)?;
            }
        }
        for (tag, values) in &record.histograms {
            self.tb.add_histogram(tag, step, values).map_err(io)?;
        }
        self.flush()
    }

    /// The run's config, as Markdown text in TensorBoard.
    pub fn config_text(&mut self, yaml: &str) -> Result<(), TrainError> {
        self.tb
            .add_text("config", 0, &format!("```yaml\n{yaml}\n```"))
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Hyperparameters for TensorBoard's HParams tab, with the metric tags it should show.
    pub fn hparams(
        &mut self,
        hparams: &BTreeMap<String, HParamValue>,
        metrics: &[&str],
    ) -> Result<(), TrainError> {
        self.tb
            .add_hparams(hparams, metrics)
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Marks the run's HParams session finished (or failed) and flushes.
    pub fn close(&mut self, success: bool) -> Result<(), TrainError> {
        let status = if success {
            SessionStatus::Success
        } else {
            SessionStatus::Failure
        };
        self.tb
            .close_session(status)
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.flush()
    }

    /// Flushes both sinks to disk.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        self.jsonl
            .flush()
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.tb.flush().map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Keeps the lines of `path` whose step is at most `step`.
fn truncate_after(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let kept: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| MetricsRecord::from_json_line(line).is_some_and(|r| r.step <= step))
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))
}
