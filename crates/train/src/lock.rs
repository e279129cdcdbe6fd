//! Advisory locks on run and sweep directories: one process at a time writes a directory. The
//! lock is the operating system's, on `DIR/.lock`, so it dies with its process (a crash or a
//! kill never leaves a directory locked); the file holds the holder's process id for the message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::TrainError;

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (created if needed) for this process, or fails naming the process that holds
    /// it; `what` says what the directory is (`run`, `sweep`) in that message.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let path = dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::Locked {
                    dir: dir.to_path_buf(),
                    what: what.to_string(),
                    holder: match holder.trim() {
                        "" => "another process".into(),
                        pid => format!("process {pid}"),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()));
        written.map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { _file: file })
    }
}
