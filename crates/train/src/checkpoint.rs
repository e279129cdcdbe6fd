//! Checkpoints: model, optimizer and loop state, written atomically and verified on load.
//!
//! Layout: `checkpoints/step-00000100/{model.mpk, optim.mpk, state.json, manifest.json}` and
//! `checkpoints/latest` naming the newest. A checkpoint is written into a temporary directory,
//! synced, then renamed into place, and `latest` is replaced by a rename: a crash mid-write
//! leaves the previous checkpoint intact and `latest` pointing at it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Where the training loop stands: enough to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Training FLOPs spent (configured convention).
    pub flops: f64,
    /// Training wall time so far, seconds.
    pub elapsed_secs: f64,
    /// Data position: training sequences consumed. The batch of step `s` is sequences
    /// `s * batch * accum ..`, so this is all the data state there is.
    pub sequences: u64,
    /// The model's and data's seed. No other randomness is drawn after the model's init.
    pub seed: u64,
    /// Sum of the training losses since the last logged step, so a resumed run logs the same
    /// window means as an uninterrupted one.
    #[serde(default)]
    pub window_loss: f64,
    /// Steps in that sum.
    #[serde(default)]
    pub window_steps: u64,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    bytes: u64,
    crc32: u32,
}

const FILES: [&str; 3] = ["model.mpk", "optim.mpk", "state.json"];

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// The checkpoints of one run directory.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// The checkpoints under `run_dir/checkpoints`.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            dir: run_dir.join("checkpoints"),
        }
    }

    /// Removes what killed writes left behind (`.step-N.tmp-PID` directories, `.latest.tmp`);
    /// call only while holding the run's lock. Returns what it removed.
    pub fn clean_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale =
                (name.starts_with(".step-") && name.contains(".tmp-")) || name == ".latest.tmp";
            if stale {
                let gone = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if gone.is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }

    /// Every checkpoint directory, newest first, each with its loop state if it is intact or
    /// why it is not: what resuming chooses from, whatever `latest` says.
    pub fn scan(&self) -> Vec<(PathBuf, Result<LoopState, String>)> {
        let mut all = self.all();
        all.reverse();
        all.into_iter()
            .map(|dir| {
                let state = self.check(&dir).and_then(|()| {
                    let text = fs::read_to_string(dir.join("state.json"))
                        .map_err(|e| format!("state.json cannot be read ({e})"))?;
                    serde_json::from_str::<LoopState>(&text)
                        .map_err(|e| format!("state.json is corrupt ({e})"))
                });
                (dir, state)
            })
            .collect()
    }

    /// The newest checkpoint's directory, if any.
    pub fn latest(&self) -> Option<PathBuf> {
        let name = fs::read_to_string(self.dir.join("latest")).ok()?;
        Some(self.dir.join(name.trim()))
    }

    /// The step of the newest checkpoint, read from its state file.
    pub fn latest_step(&self) -> Option<u64> {
        let state = fs::read_to_string(self.latest()?.join("state.json")).ok()?;
        serde_json::from_str::<LoopState>(&state)
            .ok()
            .map(|s| s.step)
    }

    /// Saves model, optimizer and state as the new latest checkpoint; keeps the newest `keep`.
    pub fn save<B, M, O>(
        &self,
        model: &M,
        optim: &O,
        state: &LoopState,
        keep: usize,
    ) -> Result<PathBuf, TrainError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        let name = format!("step-{:08}", state.step);
        let final_dir = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| TrainError::io(p, e)
        };
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let write_err = |e: burn::record::RecorderError| TrainError::Checkpoint {
            path: tmp.clone(),
            reason: e.to_string(),
            hint: "check free disk space and permissions".into(),
        };
        recorder()
            .record(model.clone().into_record(), tmp.join("model"))
            .map_err(write_err)?;
        recorder()
            .record(optim.to_record(), tmp.join("optim"))
            .map_err(write_err)?;
        let state_json = serde_json::to_vec_pretty(state).expect("state serializes");
        write_synced(&tmp.join("state.json"), &state_json)?;
        let mut files = Vec::new();
        for f in FILES {
            let bytes = fs::read(tmp.join(f)).map_err(io(&tmp.join(f)))?;
            files.push(ManifestFile {
                name: f.into(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            });
        }
        let manifest = serde_json::to_vec_pretty(&Manifest { files }).expect("manifest serializes");
        write_synced(&tmp.join("manifest.json"), &manifest)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        let latest_tmp = self.dir.join(".latest.tmp");
        write_synced(&latest_tmp, name.as_bytes())?;
        fs::rename(&latest_tmp, self.dir.join("latest")).map_err(io(&self.dir))?;
        self.prune(keep)?;
        Ok(final_dir)
    }

    /// Loads the checkpoint in `dir` into `model` and `optim`, verifying every file first.
    pub fn load_from<B, M, O>(
        &self,
        dir: &Path,
        model: M,
        optim: O,
        device: &B::Device,
    ) -> Result<(M, O, LoopState), TrainError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        let dir = dir.to_path_buf();
        self.verify(&dir)?;
        let corrupt = |e: burn::record::RecorderError| TrainError::Checkpoint {
            path: dir.clone(),
            reason: e.to_string(),
            hint: self.fallback_hint(&dir),
        };
        let model = model.load_record(
            recorder()
                .load(dir.join("model"), device)
                .map_err(corrupt)?,
        );
        let optim = optim.load_record(
            recorder()
                .load(dir.join("optim"), device)
                .map_err(corrupt)?,
        );
        let state = fs::read_to_string(dir.join("state.json"))
            .map_err(|e| TrainError::io(dir.join("state.json"), e))?;
        let state = serde_json::from_str(&state).map_err(|e| TrainError::Checkpoint {
            path: dir.join("state.json"),
            reason: e.to_string(),
            hint: self.fallback_hint(&dir),
        })?;
        Ok((model, optim, state))
    }

    /// Checks sizes and checksums against the manifest.
    pub fn verify(&self, dir: &Path) -> Result<(), TrainError> {
        self.check(dir).map_err(|reason| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
            hint: self.fallback_hint(dir),
        })
    }

    /// [`Self::verify`]'s test, with the reason a checkpoint fails it.
    fn check(&self, dir: &Path) -> Result<(), String> {
        let manifest = fs::read(dir.join("manifest.json"))
            .map_err(|e| format!("manifest.json cannot be read ({e})"))?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| format!("manifest.json is corrupt ({e})"))?;
        for f in &manifest.files {
            let bytes = fs::read(dir.join(&f.name))
                .map_err(|e| format!("{} cannot be read ({e})", f.name))?;
            if bytes.len() as u64 != f.bytes {
                return Err(format!(
                    "{} has {} bytes but the manifest says {} (truncated?)",
                    f.name,
                    bytes.len(),
                    f.bytes
                ));
            }
            if crc32fast::hash(&bytes) != f.crc32 {
                return Err(format!("{} fails its checksum", f.name));
            }
        }
        Ok(())
    }

    fn fallback_hint(&self, broken: &Path) -> String {
        let older: Vec<PathBuf> = self
            .all()
            .into_iter()
            .filter(|p| p != broken && self.check(p).is_ok())
            .collect();
        match older.last() {
            Some(prev) => format!(
                "an older checkpoint is intact: {}; delete {} and write `{}` into {}/latest to resume from it",
                prev.display(),
                broken.display(),
                prev.file_name().unwrap_or_default().to_string_lossy(),
                self.dir.display()
            ),
            None => "no intact older checkpoint exists; start the run again without --resume in a new directory".into(),
        }
    }

    /// All finished checkpoints, oldest first.
    fn all(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
            })
            .collect();
        dirs.sort();
        dirs
    }

    fn prune(&self, keep: usize) -> Result<(), TrainError> {
        let all = self.all();
        let latest = self.latest();
        for old in all.iter().take(all.len().saturating_sub(keep)) {
            if Some(old) != latest.as_ref() {
                fs::remove_dir_all(old).map_err(|e| TrainError::io(old, e))?;
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
    f.write_all(bytes).map_err(|e| TrainError::io(path, e))?;
    f.sync_all().map_err(|e| TrainError::io(path, e))
}
