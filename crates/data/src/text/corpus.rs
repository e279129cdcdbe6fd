//! Finding and reading the files of a corpus: recursion, decompression, UTF-8 checks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::config::InvalidUtf8;
use crate::error::DataError;

/// A corpus file and what identifies its version (for the cache key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CorpusFile {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) mtime_ns: u128,
}

/// `root` itself if it is a file, else every non-hidden file below it, sorted by path.
pub(crate) fn list_files(root: &Path) -> Result<Vec<CorpusFile>, DataError> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingPath {
            path: root.to_path_buf(),
        },
        _ => DataError::io(root, e),
    })?;
    let mut paths = Vec::new();
    if meta.is_dir() {
        walk(root, &mut paths)?;
        paths.sort();
    } else {
        paths.push(root.to_path_buf());
    }
    if paths.is_empty() {
        return Err(DataError::EmptyCorpus {
            path: root.to_path_buf(),
            detail: "the directory has no files".into(),
        });
    }
    paths
        .into_iter()
        .map(|path| {
            let m = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok(CorpusFile {
                size: m.len(),
                mtime_ns,
                path,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn is_compressed(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("gz" | "dz"))
}

/// The text of one file, decompressed if it ends in `.gz` or `.dz` (dictzip is gzip).
pub(crate) fn read_text(path: &Path, policy: InvalidUtf8) -> Result<String, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let compressed = is_compressed(path);
    let bytes = if compressed {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        out
    } else {
        raw
    };
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) if policy == InvalidUtf8::Replace => {
            Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            Err(DataError::NotUtf8 {
                file: path.to_path_buf(),
                offset: offset as u64,
                line: line as u64,
                decompressed: if compressed { ", decompressed" } else { "" },
            })
        }
    }
}
