//! Token shards: a checked header followed by little-endian token ids, memory-mapped on open.
//!
//! Header (48 bytes, little-endian): magic `SCLDTOK\0`, format version (u32), bytes per token
//! (u32: 1, 2 or 4), token count (u64), vocab size (u64), xxh3-64 of the payload (u64), xxh3-64 of
//! the 40 bytes before it (u64).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::DataError;

const MAGIC: &[u8; 8] = b"SCLDTOK\0";
/// Bumped whenever the shard layout changes; old caches then fail with a clear message.
pub(crate) const VERSION: u32 = 1;
const HEADER: usize = 48;

/// Bytes per token for a vocabulary size.
pub(crate) fn width_for(vocab_size: usize) -> usize {
    match vocab_size {
        0..=256 => 1,
        257..=65_536 => 2,
        _ => 4,
    }
}

/// Writes `tokens` as a shard at `path`.
pub(crate) fn write(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<(), DataError> {
    let width = width_for(vocab_size);
    let mut payload = Vec::with_capacity(tokens.len() * width);
    for &t in tokens {
        payload.extend_from_slice(&t.to_le_bytes()[..width]);
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(width as u32).to_le_bytes());
    header.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    header.extend_from_slice(&(vocab_size as u64).to_le_bytes());
    header.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    let header_sum = xxh3_64(&header);
    header.extend_from_slice(&header_sum.to_le_bytes());
    let mut f = File::create(path).map_err(|e| DataError::io(path, e))?;
    f.write_all(&header)
        .and_then(|_| f.write_all(&payload))
        .and_then(|_| f.sync_all())
        .map_err(|e| DataError::io(path, e))
}

/// An open, verified shard.
pub(crate) struct Shard {
    map: Mmap,
    width: usize,
    len: u64,
}

impl Shard {
    /// Maps `path` and checks magic, version, sizes and both checksums; `dir` is named in errors
    /// as the cache directory to delete.
    pub(crate) fn open(path: &Path, dir: &Path) -> Result<Self, DataError> {
        let corrupt = |reason: String| DataError::CorruptCache {
            file: path.to_path_buf(),
            dir: dir.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => corrupt("the shard file is missing".into()),
            _ => DataError::io(path, e),
        })?;
        // SAFETY: the cache directory is private to scalelab and its shards are never modified in
        // place (a new cache is written to a fresh directory and renamed into place); a shard that
        // is nevertheless changed underneath us fails its checksum at the next open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        if map.len() < HEADER {
            return Err(corrupt(format!(
                "{} bytes, shorter than the {HEADER}-byte header",
                map.len()
            )));
        }
        if &map[..8] != MAGIC {
            return Err(corrupt("bad magic: not a scalelab token shard".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap());
        if xxh3_64(&map[..40]) != u64_at(40) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads version {VERSION}"
            )));
        }
        let width = u32_at(12) as usize;
        let len = u64_at(16);
        let expected = HEADER as u64 + len * width as u64;
        if !matches!(width, 1 | 2 | 4) {
            return Err(corrupt(format!("{width} bytes per token")));
        }
        if map.len() as u64 != expected {
            return Err(corrupt(format!(
                "truncated or padded: {} bytes, the header promises {expected}",
                map.len()
            )));
        }
        if xxh3_64(&map[HEADER..]) != u64_at(32) {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        Ok(Self { map, width, len })
    }

    /// Tokens in the shard.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends tokens `start..end` to `out`.
    pub(crate) fn read(&self, start: u64, end: u64, out: &mut Vec<u32>) {
        let bytes =
            &self.map[HEADER + start as usize * self.width..HEADER + end as usize * self.width];
        match self.width {
            1 => out.extend(bytes.iter().map(|&b| b as u32)),
            2 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            _ => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }
}

/// The name of shard `i` inside a cache directory.
pub(crate) fn shard_name(i: usize) -> PathBuf {
    PathBuf::from(format!("shard-{i:05}.bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("scalelab-data-shard-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trips_at_every_width() {
        let dir = tmp("widths");
        for (vocab, tokens) in [
            (256, vec![0u32, 255, 7]),
            (50_000, vec![0, 49_999, 300]),
            (200_064, vec![0, 200_063, 70_000]),
        ] {
            let p = dir.join(format!("{vocab}.bin"));
            write(&p, &tokens, vocab).unwrap();
            let s = Shard::open(&p, &dir).unwrap();
            let mut out = Vec::new();
            s.read(0, s.len(), &mut out);
            assert_eq!(out, tokens);
            out.clear();
            s.read(1, 3, &mut out);
            assert_eq!(out, tokens[1..3]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_kind_of_damage_is_caught() {
        let dir = tmp("damage");
        let p = dir.join("s.bin");
        let tokens: Vec<u32> = (0..1000).map(|i| i % 251).collect();
        write(&p, &tokens, 256).unwrap();
        let good = std::fs::read(&p).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("shorter than", good[..20].to_vec()),
            ("bad magic", [b"XXXXXXXX", &good[8..]].concat()),
            ("header checksum", {
                let mut b = good.clone();
                b[16] ^= 1;
                b
            }),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("payload checksum", {
                let mut b = good.clone();
                b[HEADER + 500] ^= 0x10;
                b
            }),
        ];
        for (want, bytes) in cases {
            std::fs::write(&p, bytes).unwrap();
            let err = Shard::open(&p, &dir).err().expect(want).to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains("delete the directory"), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
