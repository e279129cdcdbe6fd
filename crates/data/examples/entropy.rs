//! Prints the synthetic language's entropy rate at several sequence lengths, with where it comes
//! from (the numbers quoted in `crates/data/README.md`).
//!
//! `cargo run --release -p scalelab-data --example entropy [config.yaml]`

use scalelab_data::{DataConfig, Dataset, Split, SyntheticConfig, SyntheticLanguage, TokenKind};

fn main() {
    let cfg = match std::env::args().nth(1) {
        Some(path) => match DataConfig::from_yaml_file(&path) {
            Ok(DataConfig::Synthetic(c)) => c,
            Ok(_) => panic!("{path} is not a synthetic config"),
            Err(e) => panic!("{e}"),
        },
        None => SyntheticConfig::default(),
    };
    let lang = SyntheticLanguage::new(&cfg, 1).unwrap();
    println!(
        "unigram entropy of words {:.4} nats; word chain entropy rate {:.4} nats",
        lang.unigram_entropy(),
        lang.markov_entropy()
    );
    println!("len\tnats/token\tstd_error\tbits/token\tseconds");
    for len in [129, 257, 513, 1025, 2049, 4097] {
        let t = std::time::Instant::now();
        let e = lang.estimate_entropy_rate(len, cfg.entropy_sequences);
        println!(
            "{len}\t{:.4}\t{:.4}\t{:.4}\t{:.2}",
            e.nats,
            e.std_error,
            e.bits(),
            t.elapsed().as_secs_f64()
        );
    }
    // Where the entropy sits: tokens grouped by the segment they belong to, over 256 sequences
    // of 1025 tokens (position 0 excluded).
    let layout = lang.layout().clone();
    let mut by_part: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for i in 0..256 {
        let t = lang.traced(Split::Validation, i, 1025);
        let mut pending: Vec<&str> = Vec::new();
        for (pos, (&tok, &h)) in t.tokens.iter().zip(&t.entropy).enumerate() {
            let part = pending.pop().unwrap_or("slot (word, bracket or marker)");
            if pending.is_empty() {
                match layout.kind(tok) {
                    TokenKind::Copy(c) => pending = vec!["copied token"; cfg.copy.lengths[c]],
                    TokenKind::Fact => pending = vec!["fact value", "fact key"],
                    TokenKind::Query => pending = vec!["query value", "query key"],
                    _ => {}
                }
            }
            if pos > 0 {
                let e = by_part.entry(part).or_default();
                e.0 += 1;
                e.1 += h;
            }
        }
    }
    let total: usize = by_part.values().map(|v| v.0).sum();
    println!("part\tshare of tokens\tmean entropy (nats)\tshare of the entropy");
    let total_h: f64 = by_part.values().map(|v| v.1).sum();
    for (k, (n, h)) in by_part {
        println!(
            "{k}\t{:.4}\t{:.4}\t{:.4}",
            n as f64 / total as f64,
            h / n as f64,
            h / total_h
        );
    }
    println!("{}", SyntheticLanguage::new(&cfg, 512).unwrap().describe());
}
