//! Real text: a corpus tokenized once into memory-mapped shards, served as fixed windows.

mod corpus;
mod shard;
mod tokenize;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use xxhash_rust::xxh3::xxh3_128;

use crate::config::{InvalidUtf8, TextConfig, TokenizerConfig};
use crate::error::DataError;
use crate::probes::RecallSyntax;
use crate::rng::{domain, mix64, stream_key};
use crate::{Dataset, Haystack, Split};
use corpus::CorpusFile;
use shard::Shard;

/// Whether [`TextDataset::open`] tokenized the corpus or found it in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Tokenized now and written to the cache.
    Built,
    /// Reopened from the cache without reading the corpus.
    Reused,
}

/// What a cache directory holds, written last so that its presence marks a complete cache.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    root: PathBuf,
    files: Vec<CorpusFile>,
    tokenizer: TokenizerConfig,
    invalid_utf8: InvalidUtf8,
    /// Vocabulary the BPE actually learned (256 for bytes).
    learned_vocab_size: usize,
    text_bytes: u64,
    /// Tokens per shard.
    shards: Vec<u64>,
}

const MANIFEST: &str = "manifest.json";
const TOKENIZER: &str = "tokenizer.json";
const SHARD_TOKENS: usize = 1 << 28;

/// A tokenized text corpus cut into disjoint windows of `seq_len + 1` tokens.
///
/// The files (in path order) form one token stream; window `w` is tokens
/// `w (seq_len + 1) .. (w + 1)(seq_len + 1)` (the tail that fills no window is unused). A share
/// `validation_fraction` of the windows, evenly spaced through the corpus, is the validation split;
/// the rest is train. Index `i` of a split visits its windows in a seeded order that changes every
/// epoch (`i / windows`), or in corpus order with `shuffle: false`.
pub struct TextDataset {
    cfg: TextConfig,
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// First stream position of each shard.
    starts: Vec<u64>,
    total: u64,
    window: u64,
    windows: u64,
    validation_windows: u64,
    tokenizer: Option<Tokenizer>,
    status: CacheStatus,
}

impl TextDataset {
    /// Opens the corpus for windows of `seq_len + 1` tokens, tokenizing it into
    /// `cache_dir/text-<key>/` first unless that cache exists; the key hashes the files' paths,
    /// sizes and modification times and the tokenizer settings.
    pub fn open(cfg: &TextConfig, seq_len: usize, cache_dir: &Path) -> Result<Self, DataError> {
        Self::open_with_shard_size(cfg, seq_len, cache_dir, SHARD_TOKENS)
    }

    fn open_with_shard_size(
        cfg: &TextConfig,
        seq_len: usize,
        cache_dir: &Path,
        shard_tokens: usize,
    ) -> Result<Self, DataError> {
        cfg.validate()?;
        if seq_len == 0 {
            return Err(DataError::invalid("seq_len", 0, "must be at least 1"));
        }
        let root = std::fs::canonicalize(&cfg.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::MissingPath {
                path: cfg.path.clone(),
            },
            _ => DataError::io(&cfg.path, e),
        })?;
        let files = corpus::list_files(&root)?;
        let dir = cache_dir.join(format!("text-{}", cache_key(&files, cfg)));
        let status = if dir.join(MANIFEST).exists() {
            CacheStatus::Reused
        } else if dir.exists() {
            return Err(DataError::CorruptCache {
                file: dir.join(MANIFEST),
                dir,
                reason: "the manifest is missing".into(),
            });
        } else {
            build(cfg, &root, files, cache_dir, &dir, shard_tokens)?;
            CacheStatus::Built
        };
        Self::from_cache(cfg, seq_len, dir, status)
    }

    fn from_cache(
        cfg: &TextConfig,
        seq_len: usize,
        dir: PathBuf,
        status: CacheStatus,
    ) -> Result<Self, DataError> {
        let manifest_path = dir.join(MANIFEST);
        let corrupt = |file: &Path, reason: String| DataError::CorruptCache {
            file: file.to_path_buf(),
            dir: dir.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| corrupt(&manifest_path, format!("unreadable manifest: {e}")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| corrupt(&manifest_path, format!("unparseable manifest: {e}")))?;
        if manifest.format != shard::VERSION {
            return Err(corrupt(
                &manifest_path,
                format!(
                    "format version {}, this build reads version {}",
                    manifest.format,
                    shard::VERSION
                ),
            ));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = Vec::with_capacity(manifest.shards.len());
        let mut total = 0;
        for (i, &count) in manifest.shards.iter().enumerate() {
            let path = dir.join(shard::shard_name(i));
            let s = Shard::open(&path, &dir)?;
            if s.len() != count {
                return Err(corrupt(
                    &path,
                    format!("holds {} tokens, the manifest says {count}", s.len()),
                ));
            }
            starts.push(total);
            total += count;
            shards.push(s);
        }
        let tokenizer = match cfg.tokenizer {
            TokenizerConfig::Byte => None,
            TokenizerConfig::Bpe { .. } => {
                let path = dir.join(TOKENIZER);
                if !path.exists() {
                    return Err(corrupt(&path, "tokenizer.json is missing".into()));
                }
                Some(tokenize::load_bpe(&path)?)
            }
        };
        let window = seq_len as u64 + 1;
        let windows = total / window;
        if windows < 2 {
            return Err(DataError::CorpusTooSmall {
                path: cfg.path.clone(),
                tokens: total,
                needed: 2 * window,
                window,
            });
        }
        let validation_windows =
            ((windows as f64 * cfg.validation_fraction).round() as u64).clamp(1, windows - 1);
        Ok(Self {
            cfg: cfg.clone(),
            dir,
            manifest,
            shards,
            starts,
            total,
            window,
            windows,
            validation_windows,
            tokenizer,
            status,
        })
    }

    /// Whether this open tokenized the corpus or reused the cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.status
    }

    /// The cache directory of this corpus and tokenizer.
    pub fn cache_dir(&self) -> &Path {
        &self.dir
    }

    /// Tokens in the whole corpus.
    pub fn total_tokens(&self) -> u64 {
        self.total
    }

    /// Number of windows of the whole corpus (train plus validation).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The corpus window (`0..windows()`) that sequence `index` of `split` reads.
    pub fn window_of(&self, split: Split, index: u64) -> u64 {
        let n = self.split_windows(split);
        let (epoch, j) = (index / n, index % n);
        let p = if self.cfg.shuffle {
            permute(
                j,
                n,
                stream_key(
                    self.cfg.seed,
                    domain::WINDOW_ORDER,
                    2 * epoch + split as u64,
                ),
            )
        } else {
            j
        };
        match split {
            Split::Train => train_window(p, self.windows, self.validation_windows),
            Split::Validation => validation_window(p, self.windows, self.validation_windows),
        }
    }

    fn split_windows(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.windows - self.validation_windows,
            Split::Validation => self.validation_windows,
        }
    }

    /// Token ids of `text` under this corpus's tokenizer.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        match &self.tokenizer {
            None => Ok(text.bytes().map(u32::from).collect()),
            Some(t) => tokenize::encode_bpe(t, text),
        }
    }

    /// Text of token ids (invalid UTF-8 shown as U+FFFD).
    pub fn decode(&self, tokens: &[u32]) -> Result<String, DataError> {
        match &self.tokenizer {
            None => {
                let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Some(t) => tokenize::decode_bpe(t, tokens),
        }
    }

    /// `len` stream tokens from `start`, wrapping around the end of the corpus.
    fn read(&self, start: u64, len: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(len);
        let mut pos = start % self.total;
        while out.len() < len {
            let s = self.starts.partition_point(|&b| b <= pos) - 1;
            let local = pos - self.starts[s];
            let take = (self.shards[s].len() - local).min((len - out.len()) as u64);
            self.shards[s].read(local, local + take, &mut out);
            pos = (pos + take) % self.total;
        }
        out
    }
}

impl Dataset for TextDataset {
    fn vocab_size(&self) -> usize {
        match self.cfg.tokenizer {
            TokenizerConfig::Byte => 256,
            TokenizerConfig::Bpe { vocab_size, .. } => vocab_size,
        }
    }

    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<u32> {
        assert!(
            len as u64 <= self.window,
            "a text window holds seq_len + 1 = {} tokens; {len} were asked for (open the dataset \
             with the seq_len you train with)",
            self.window
        );
        self.read(self.window_of(split, index) * self.window, len)
    }

    fn describe(&self) -> String {
        let m = &self.manifest;
        let tokenizer = match self.cfg.tokenizer {
            TokenizerConfig::Byte => "byte tokenizer".to_string(),
            TokenizerConfig::Bpe { vocab_size, .. } => format!(
                "BPE tokenizer ({} of {vocab_size} tokens learned)",
                m.learned_vocab_size
            ),
        };
        format!(
            "text {} ({} file{}, {} bytes): {tokenizer}, {} tokens ({:.3} bytes/token); {} \
             windows of {} tokens ({} train / {} validation); cache {} ({})",
            self.cfg.path.display(),
            m.files.len(),
            if m.files.len() == 1 { "" } else { "s" },
            m.text_bytes,
            self.total,
            m.text_bytes as f64 / self.total as f64,
            self.windows,
            self.window,
            self.windows - self.validation_windows,
            self.validation_windows,
            self.dir.display(),
            match self.status {
                CacheStatus::Built => "built now",
                CacheStatus::Reused => "reused",
            }
        )
    }

    fn num_sequences(&self, split: Split) -> Option<u64> {
        Some(self.split_windows(split))
    }

    fn max_len(&self) -> Option<usize> {
        Some(self.window as usize)
    }

    /// ASCII ids ([`RecallSyntax::bytes`]) for the byte tokenizer; none for BPE, whose ids depend
    /// on the merges learned (build one with [`TextDataset::encode`]).
    fn recall_syntax(&self) -> Option<RecallSyntax> {
        match self.cfg.tokenizer {
            TokenizerConfig::Byte => Some(RecallSyntax::bytes()),
            TokenizerConfig::Bpe { .. } => None,
        }
    }

    /// A contiguous stretch of the corpus (which may overlap training windows: a probe tests the
    /// needle, not the filler) with `statement` spliced in at `position`.
    fn haystack(&self, index: u64, len: usize, position: usize, statement: &[u32]) -> Haystack {
        let filler_len = len.saturating_sub(statement.len());
        let start = stream_key(self.cfg.seed, domain::HAYSTACK, index) % self.total;
        let mut tokens = self.read(start, filler_len);
        let at = position.min(filler_len);
        tokens.splice(at..at, statement.iter().copied());
        Haystack {
            tokens,
            statement_at: at,
        }
    }
}

fn cache_key(files: &[CorpusFile], cfg: &TextConfig) -> String {
    let mut desc = format!("scalelab-data text cache, format {}\n", shard::VERSION);
    match cfg.tokenizer {
        TokenizerConfig::Byte => desc.push_str("tokenizer byte\n"),
        TokenizerConfig::Bpe {
            vocab_size,
            min_frequency,
        } => desc.push_str(&format!(
            "tokenizer bpe vocab_size {vocab_size} min_frequency {min_frequency}\n"
        )),
    }
    desc.push_str(&format!("invalid_utf8 {:?}\n", cfg.invalid_utf8));
    for f in files {
        desc.push_str(&format!(
            "{}\t{}\t{}\n",
            f.path.display(),
            f.size,
            f.mtime_ns
        ));
    }
    format!("{:032x}", xxh3_128(desc.as_bytes()))
}

/// Collects tokens and writes a shard each time `limit` of them have arrived.
struct ShardWriter<'a> {
    dir: &'a Path,
    vocab_size: usize,
    limit: usize,
    buf: Vec<u32>,
    counts: Vec<u64>,
}

impl ShardWriter<'_> {
    fn push(&mut self, tokens: impl IntoIterator<Item = u32>) -> Result<(), DataError> {
        for t in tokens {
            self.buf.push(t);
            if self.buf.len() == self.limit {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if !self.buf.is_empty() {
            let path = self.dir.join(shard::shard_name(self.counts.len()));
            shard::write(&path, &self.buf, self.vocab_size)?;
            self.counts.push(self.buf.len() as u64);
            self.buf.clear();
        }
        Ok(())
    }
}

/// Tokenizes the corpus into a fresh directory, then renames it to `dir`.
fn build(
    cfg: &TextConfig,
    root: &Path,
    files: Vec<CorpusFile>,
    cache_dir: &Path,
    dir: &Path,
    shard_tokens: usize,
) -> Result<(), DataError> {
    let texts = files
        .iter()
        .map(|f| corpus::read_text(&f.path, cfg.invalid_utf8))
        .collect::<Result<Vec<String>, _>>()?;
    let text_bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    if text_bytes == 0 {
        return Err(DataError::EmptyCorpus {
            path: cfg.path.clone(),
            detail: format!("{} file(s), all empty", files.len()),
        });
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| DataError::io(cache_dir, e))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = cache_dir.join(format!(
        ".{}.tmp-{}-{nonce}",
        dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let result = write_cache(cfg, root, files, &texts, text_bytes, &tmp, shard_tokens);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join(MANIFEST).exists() {
            return Err(DataError::io(
                dir,
                std::io::Error::other("could not move the new cache into place"),
            ));
        }
    }
    Ok(())
}

fn write_cache(
    cfg: &TextConfig,
    root: &Path,
    files: Vec<CorpusFile>,
    texts: &[String],
    text_bytes: u64,
    tmp: &Path,
    shard_tokens: usize,
) -> Result<(), DataError> {
    let (tokenizer, learned_vocab_size) = match cfg.tokenizer {
        TokenizerConfig::Byte => (None, 256),
        TokenizerConfig::Bpe {
            vocab_size,
            min_frequency,
        } => {
            let t = tokenize::train_bpe(texts, vocab_size, min_frequency, &tmp.join(TOKENIZER))?;
            let learned = t.get_vocab_size(true);
            (Some(t), learned)
        }
    };
    let vocab_size = match cfg.tokenizer {
        TokenizerConfig::Byte => 256,
        TokenizerConfig::Bpe { vocab_size, .. } => vocab_size.max(learned_vocab_size),
    };
    let mut writer = ShardWriter {
        dir: tmp,
        vocab_size,
        limit: shard_tokens,
        buf: Vec::new(),
        counts: Vec::new(),
    };
    for text in texts {
        match &tokenizer {
            None => writer.push(text.bytes().map(u32::from))?,
            Some(t) => writer.push(tokenize::encode_bpe(t, text)?)?,
        }
    }
    writer.flush()?;
    let manifest = Manifest {
        format: shard::VERSION,
        root: root.to_path_buf(),
        files,
        tokenizer: cfg.tokenizer.clone(),
        invalid_utf8: cfg.invalid_utf8,
        learned_vocab_size,
        text_bytes,
        shards: writer.counts,
    };
    let path = tmp.join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest always serializes");
    std::fs::write(&path, json).map_err(|e| DataError::io(&path, e))
}

/// Validation windows are the `w` where `floor((w + 1) m / n)` steps up: `m` of the `n` windows,
/// evenly spaced, the last window always among them.
fn validations_upto(w: u64, n: u64, m: u64) -> u64 {
    ((w as u128 + 1) * m as u128 / n as u128) as u64
}

/// The `j`-th validation window: the smallest `w` with `floor((w + 1) m / n) = j + 1`.
fn validation_window(j: u64, n: u64, m: u64) -> u64 {
    ((j as u128 + 1) * n as u128).div_ceil(m as u128) as u64 - 1
}

/// The `i`-th train window: the smallest `w` with `i + 1` train windows in `0..=w`.
fn train_window(i: u64, n: u64, m: u64) -> u64 {
    let (mut lo, mut hi) = (i, n - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if mid + 1 - validations_upto(mid, n, m) > i {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// A seeded affine bijection of `0..n`: `j -> (a j + b) mod n` with `gcd(a, n) = 1`.
fn permute(j: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let mut a = 1 + mix64(key) % (n - 1);
    while gcd(a, n) != 1 {
        a = a % (n - 1) + 1;
    }
    let b = mix64(key ^ 0x5851_f42d_4c95_7f2d) % n;
    ((a as u128 * j as u128 + b as u128) % n as u128) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_exactly_and_evenly() {
        for (n, m) in [(2, 1), (10, 1), (10, 3), (97, 10), (1000, 500), (1000, 999)] {
            let val: Vec<u64> = (0..m).map(|j| validation_window(j, n, m)).collect();
            let train: Vec<u64> = (0..n - m).map(|i| train_window(i, n, m)).collect();
            let mut all: Vec<u64> = val.iter().chain(&train).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "n={n} m={m}");
            assert!(val.windows(2).all(|w| w[0] < w[1]) && train.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(*val.last().unwrap(), n - 1);
            // Evenly spaced: gaps differ by at most one.
            let gaps: Vec<u64> = val.windows(2).map(|w| w[1] - w[0]).collect();
            if let (Some(lo), Some(hi)) = (gaps.iter().min(), gaps.iter().max()) {
                assert!(hi - lo <= 1, "{gaps:?}");
            }
        }
    }

    #[test]
    fn permutations_are_bijections() {
        for n in [1, 2, 3, 10, 64, 1001] {
            for key in 0..5 {
                let mut seen: Vec<u64> = (0..n).map(|j| permute(j, n, key)).collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn windows_straddle_shards() {
        let dir =
            std::env::temp_dir().join(format!("scalelab-data-straddle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = dir.join("c.txt");
        let text: String = (0..3000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        std::fs::write(&corpus, &text).unwrap();
        let mut cfg = TextConfig::new(&corpus);
        cfg.shuffle = false;
        let ds = TextDataset::open_with_shard_size(&cfg, 99, &dir.join("cache"), 250).unwrap();
        assert_eq!(ds.shards.len(), 12);
        for split in [Split::Train, Split::Validation] {
            for i in 0..ds.num_sequences(split).unwrap() {
                let w = ds.window_of(split, i);
                let got = ds.sequence(split, i, 100);
                let want: Vec<u32> = text.as_bytes()[(w * 100) as usize..(w * 100 + 100) as usize]
                    .iter()
                    .map(|&b| b as u32)
                    .collect();
                assert_eq!(got, want);
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
