//! Text corpora against the small files in `tests/data/`: tokenization round trips, windows and
//! splits, the cache (reuse, invalidation, damage), and every error a user can cause. The GCIDE
//! test runs only where Debian's `dict-gcide` is installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use scalelab_data::{
    open, CacheStatus, DataConfig, DataError, Dataset, InvalidUtf8, Split, TextConfig, TextDataset,
    TokenizerConfig,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// An empty scratch directory private to one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("scalelab-data-text")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The corpus directory's text as the dataset reads it: files in path order, hidden ones skipped.
fn corpus_text() -> String {
    ["corpus/essay.txt", "corpus/notes/weather.md"]
        .iter()
        .map(|f| std::fs::read_to_string(data(f)).unwrap())
        .collect()
}

fn unshuffled(path: PathBuf) -> TextConfig {
    TextConfig {
        shuffle: false,
        validation_fraction: 0.1,
        ..TextConfig::new(path)
    }
}

#[test]
fn byte_windows_round_trip_the_corpus_in_order() {
    let cache = scratch("bytes");
    let ds = TextDataset::open(&unshuffled(data("corpus")), 63, &cache).unwrap();
    let text = corpus_text();
    assert_eq!(ds.total_tokens(), text.len() as u64);
    assert_eq!(ds.vocab_size(), 256);
    assert_eq!(ds.windows(), text.len() as u64 / 64);
    for split in [Split::Train, Split::Validation] {
        for i in 0..ds.num_sequences(split).unwrap() {
            let w = ds.window_of(split, i) as usize;
            let seq = ds.sequence(split, i, 64);
            assert_eq!(ds.decode(&seq).unwrap(), text[w * 64..(w + 1) * 64]);
        }
    }
    assert_eq!(
        ds.encode(&text).unwrap(),
        text.bytes().map(u32::from).collect::<Vec<_>>()
    );
    assert_eq!(
        ds.sequence(Split::Train, 0, 10),
        ds.sequence(Split::Train, 0, 64)[..10]
    );
}

#[test]
fn splits_are_disjoint_cover_the_corpus_and_reshuffle_each_epoch() {
    let cache = scratch("splits");
    let cfg = TextConfig {
        validation_fraction: 0.1,
        seed: 3,
        ..TextConfig::new(data("corpus"))
    };
    let ds = TextDataset::open(&cfg, 31, &cache).unwrap();
    let n = ds.windows();
    let (nt, nv) = (
        ds.num_sequences(Split::Train).unwrap(),
        ds.num_sequences(Split::Validation).unwrap(),
    );
    assert_eq!(nt + nv, n);
    assert_eq!(nv, (n as f64 * 0.1).round() as u64);
    let epoch = |split, e: u64, count: u64| -> Vec<u64> {
        (e * count..(e + 1) * count)
            .map(|i| ds.window_of(split, i))
            .collect()
    };
    let (train0, val0) = (epoch(Split::Train, 0, nt), epoch(Split::Validation, 0, nv));
    let mut all: Vec<u64> = train0.iter().chain(&val0).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "each window in exactly one split"
    );
    let train1 = epoch(Split::Train, 1, nt);
    assert_ne!(train0, train1, "a new order each epoch");
    let (mut s0, mut s1) = (train0.clone(), train1);
    s0.sort_unstable();
    s1.sort_unstable();
    assert_eq!(s0, s1, "the same windows each epoch");
    assert_ne!(train0, {
        let mut sorted = train0.clone();
        sorted.sort_unstable();
        sorted
    });
    // Deterministic across opens.
    let again = TextDataset::open(&cfg, 31, &cache).unwrap();
    assert_eq!(
        again.sequence(Split::Train, 17, 32),
        ds.sequence(Split::Train, 17, 32)
    );
}

fn mtimes(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_cache_is_reused_and_invalidated_by_a_changed_file() {
    let cache = scratch("reuse");
    let corpus = scratch("reuse-corpus").join("text.txt");
    std::fs::write(&corpus, corpus_text()).unwrap();
    let cfg = TextConfig::new(&corpus);
    let first = TextDataset::open(&cfg, 63, &cache).unwrap();
    assert_eq!(first.cache_status(), CacheStatus::Built);
    let before = mtimes(first.cache_dir());
    assert!(before.iter().any(|(p, _)| p.ends_with("shard-00000.bin")));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = TextDataset::open(&cfg, 63, &cache).unwrap();
    assert_eq!(second.cache_status(), CacheStatus::Reused);
    assert_eq!(second.cache_dir(), first.cache_dir());
    assert_eq!(mtimes(second.cache_dir()), before, "nothing rewritten");
    assert_eq!(
        second.sequence(Split::Train, 5, 64),
        first.sequence(Split::Train, 5, 64)
    );
    assert!(
        second.describe().contains("reused"),
        "{}",
        second.describe()
    );
    // A different seq_len reuses the same tokens.
    assert_eq!(
        TextDataset::open(&cfg, 15, &cache).unwrap().cache_status(),
        CacheStatus::Reused
    );
    // Editing the corpus changes size and mtime, hence the key.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&corpus)
        .unwrap()
        .write_all(b"One more line.\n")
        .unwrap();
    let third = TextDataset::open(&cfg, 63, &cache).unwrap();
    assert_eq!(third.cache_status(), CacheStatus::Built);
    assert_ne!(third.cache_dir(), first.cache_dir());
    assert_eq!(third.total_tokens(), first.total_tokens() + 15);
}

#[test]
fn bpe_trains_saves_tokenizer_json_and_reloads_it() {
    let cache = scratch("bpe");
    let cfg = TextConfig {
        tokenizer: TokenizerConfig::Bpe {
            vocab_size: 400,
            min_frequency: 2,
        },
        shuffle: false,
        ..TextConfig::new(data("corpus"))
    };
    let built = TextDataset::open(&cfg, 31, &cache).unwrap();
    assert_eq!(built.cache_status(), CacheStatus::Built);
    assert_eq!(built.vocab_size(), 400);
    let json = built.cache_dir().join("tokenizer.json");
    assert!(json.exists());
    let text = corpus_text();
    let ids = built.encode(&text).unwrap();
    assert_eq!(
        built.total_tokens(),
        ids.len() as u64,
        "shards hold the corpus encoding"
    );
    assert!(
        ids.iter().all(|&t| t < 400) && ids.iter().any(|&t| t >= 256),
        "merges learned"
    );
    assert!(text.len() as f64 / ids.len() as f64 > 1.5, "BPE compresses");
    assert_eq!(built.decode(&ids).unwrap(), text, "BPE round-trips");
    let w = built.window_of(Split::Train, 0) as usize;
    assert_eq!(
        built.sequence(Split::Train, 0, 32),
        ids[w * 32..(w + 1) * 32]
    );

    let reloaded = TextDataset::open(&cfg, 31, &cache).unwrap();
    assert_eq!(reloaded.cache_status(), CacheStatus::Reused);
    assert_eq!(reloaded.encode(&text).unwrap(), ids);
    // The saved file is a plain HuggingFace tokenizer.
    let hf = tokenizers::Tokenizer::from_file(&json).unwrap();
    assert_eq!(
        hf.encode("the river", false).unwrap().get_ids(),
        reloaded.encode("the river").unwrap()
    );
    assert!(reloaded.recall_syntax().is_none());
}

#[test]
fn gzip_and_dictzip_files_are_decompressed() {
    let dir = scratch("gz");
    let text = corpus_text();
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    for name in ["a.txt.gz", "b.dict.dz"] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(dir.join("corpus").join(name), enc.finish().unwrap()).unwrap();
    }
    let ds = TextDataset::open(&unshuffled(dir.join("corpus")), 63, &dir.join("cache")).unwrap();
    assert_eq!(ds.total_tokens(), 2 * text.len() as u64);
    let w = ds.window_of(Split::Train, 0) as usize;
    let both = text.repeat(2);
    assert_eq!(
        ds.decode(&ds.sequence(Split::Train, 0, 64)).unwrap(),
        both[w * 64..(w + 1) * 64]
    );
}

fn open_err(cfg: &TextConfig, seq_len: usize, cache: &Path) -> DataError {
    match TextDataset::open(cfg, seq_len, cache) {
        Ok(_) => panic!("{cfg:?} opened"),
        Err(e) => e,
    }
}

#[test]
fn user_errors_name_the_file_and_the_fix() {
    let cache = scratch("errors");
    let missing = open_err(&TextConfig::new(data("no-such-corpus")), 63, &cache);
    assert!(
        matches!(missing, DataError::MissingPath { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("no-such-corpus"), "{missing}");

    let empty = open_err(&TextConfig::new(data("empty.txt")), 63, &cache);
    assert!(matches!(empty, DataError::EmptyCorpus { .. }), "{empty}");
    let empty_dir = scratch("errors-empty-dir");
    let e = open_err(&TextConfig::new(&empty_dir), 63, &cache);
    assert!(e.to_string().contains("no files"), "{e}");

    let latin = open_err(&TextConfig::new(data("latin1.txt")), 8, &cache);
    let msg = latin.to_string();
    assert!(
        matches!(
            latin,
            DataError::NotUtf8 {
                offset: 53,
                line: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("latin1.txt")
            && msg.contains("byte 53")
            && msg.contains("invalid_utf8: replace"),
        "{msg}"
    );
    let replaced = TextDataset::open(
        &TextConfig {
            invalid_utf8: InvalidUtf8::Replace,
            ..TextConfig::new(data("latin1.txt"))
        },
        8,
        &cache,
    )
    .unwrap();
    let all: Vec<u32> = (0..replaced.windows())
        .flat_map(|w| replaced.sequence(Split::Train, w, 9))
        .collect();
    assert!(replaced.decode(&all).unwrap().contains('\u{FFFD}'));

    let tiny = open_err(&TextConfig::new(data("tiny.txt")), 63, &cache);
    assert!(
        matches!(
            tiny,
            DataError::CorpusTooSmall {
                tokens: 11,
                needed: 128,
                ..
            }
        ),
        "{tiny}"
    );

    let bad = DataConfig::Text(TextConfig {
        validation_fraction: 0.9,
        ..TextConfig::new(data("corpus"))
    });
    let e = open(&bad, 63, &cache).err().unwrap().to_string();
    assert!(e.starts_with("validation_fraction = 0.9"), "{e}");
}

#[test]
fn damaged_caches_say_which_file_and_to_delete_the_directory() {
    let cache = scratch("damage");
    let cfg = TextConfig::new(data("corpus"));
    let dir = TextDataset::open(&cfg, 63, &cache)
        .unwrap()
        .cache_dir()
        .to_path_buf();
    let shard = dir.join("shard-00000.bin");
    let good = std::fs::read(&shard).unwrap();
    let expect = |needle: &str| {
        let e = open_err(&cfg, 63, &cache);
        let msg = e.to_string();
        assert!(matches!(e, DataError::CorruptCache { .. }), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(
            msg.contains(&format!("delete the directory {}", dir.display())),
            "{msg}"
        );
    };
    let mut flipped = good.clone();
    flipped[100] ^= 0x20;
    std::fs::write(&shard, &flipped).unwrap();
    expect("shard-00000.bin: corrupt token cache (payload checksum mismatch)");
    std::fs::write(&shard, &good[..good.len() - 7]).unwrap();
    expect("truncated");
    std::fs::write(&shard, &good).unwrap();
    assert_eq!(
        TextDataset::open(&cfg, 63, &cache).unwrap().cache_status(),
        CacheStatus::Reused
    );
    std::fs::write(dir.join("manifest.json"), "{ not json").unwrap();
    expect("unparseable manifest");
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    expect("manifest is missing");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        TextDataset::open(&cfg, 63, &cache).unwrap().cache_status(),
        CacheStatus::Built
    );
}

#[test]
#[should_panic(expected = "a text window holds seq_len + 1 = 64 tokens")]
fn asking_for_more_than_a_window_panics_with_the_reason() {
    let ds = TextDataset::open(&TextConfig::new(data("corpus")), 63, &scratch("too-long")).unwrap();
    ds.sequence(Split::Train, 0, 65);
}

const GCIDE: &str = "/usr/share/dictd/gcide.dict.dz";

/// End to end on a real English corpus from a Debian package (`apt-get install dict-gcide`):
/// 40 MB of dictionary text, compressed with dictzip, with three bytes that are not UTF-8.
#[test]
fn gcide_dictionary_end_to_end() {
    if !Path::new(GCIDE).exists() {
        eprintln!("skipped: {GCIDE} is not installed (apt-get install dict-gcide)");
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scalelab-data-gcide");
    let strict = DataConfig::from_yaml_str(&format!("kind: text\npath: {GCIDE}")).unwrap();
    let e = open(&strict, 255, &cache)
        .err()
        .expect("GCIDE has non-UTF-8 bytes");
    assert!(
        e.to_string()
            .contains("gcide.dict.dz: not valid UTF-8 at byte 3641181"),
        "{e}"
    );
    let cfg = DataConfig::from_yaml_str(&format!(
        "kind: text\npath: {GCIDE}\ninvalid_utf8: replace\nvalidation_fraction: 0.01"
    ))
    .unwrap();
    let t = std::time::Instant::now();
    let ds = open(&cfg, 255, &cache).unwrap();
    let first_open = t.elapsed();
    assert!(ds.describe().contains("39952"), "{}", ds.describe());
    let text: String = (0..200)
        .map(|i| {
            let s = ds.sequence(Split::Validation, i, 256);
            String::from_utf8_lossy(&s.iter().map(|&b| b as u8).collect::<Vec<_>>()).into_owned()
        })
        .collect();
    assert!(
        text.contains(" the ") && text.contains("[1913 Webster]"),
        "{text}"
    );
    let t = std::time::Instant::now();
    let again = open(&cfg, 255, &cache).unwrap();
    assert!(again.describe().contains("reused"));
    assert!(
        t.elapsed().as_secs_f64() < 2.0,
        "reopen took {:?} (first {first_open:?})",
        t.elapsed()
    );
}
