//! Names the kernel sources this binary was built from: an FNV-1a hash of the scalelab kernels,
//! the vendored patches and Cargo.lock (which pins Burn's and CubeCL's kernels). CubeCL keys its
//! on-disk PTX cache by kernel name and settings, not by source, so the CLI keeps each build's
//! cache in a folder of this name: a rebuilt kernel is never served from an older build's PTX.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = [
        root.join("kernels/src"),
        root.join("patches"),
        root.join("Cargo.lock"),
    ];
    let mut all = Vec::new();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
        if s.is_dir() {
            files(s, &mut all);
        } else {
            all.push(s.clone());
        }
    }
    all.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in &all {
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(path).unwrap_or_default();
        for b in name.as_bytes().iter().chain(&[0]).chain(&bytes) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=SCALELAB_KERNEL_SOURCES={hash:016x}");
}
