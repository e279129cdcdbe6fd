//! Retrieval probes: a lookup oracle scores 1, context-blind guesses score chance, needles sit at
//! their depth, and haystacks in the synthetic language are sentences of the language.

use std::path::Path;

use scalelab_data::probes::{
    mqar, niah, score, MqarConfig, ProbeExample, ProbeGrid, ProbeTask, RecallSyntax,
};
use scalelab_data::{
    Dataset, SyntheticConfig, SyntheticLanguage, TextConfig, TextDataset, TokenizerConfig,
};

fn language() -> SyntheticLanguage {
    SyntheticLanguage::new(&SyntheticConfig::default(), 256).unwrap()
}

fn corpus(tokenizer: TokenizerConfig, cache: &str) -> TextDataset {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("scalelab-data-probes")
        .join(cache);
    let cfg = TextConfig {
        tokenizer,
        ..TextConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus"))
    };
    TextDataset::open(&cfg, 63, &dir).unwrap()
}

/// The perfect retriever: finds the key being asked, searches the context before the query for
/// the statement of that key, and answers the token after it.
fn lookup_oracle(ex: &ProbeExample, s: &RecallSyntax) -> Vec<u32> {
    ex.targets
        .iter()
        .map(|&(p, _)| {
            let key_at = p - s.infix.len();
            let pattern = [&s.fact_prefix[..], &[ex.tokens[key_at]], &s.infix].concat();
            let context = &ex.tokens[..key_at - s.query_prefix.len()];
            context
                .windows(pattern.len())
                .rposition(|w| w == pattern)
                .map_or(s.values[0], |i| context[i + pattern.len()])
        })
        .collect()
}

fn oracle_accuracy(examples: &[ProbeExample], s: &RecallSyntax) -> f64 {
    let preds: Vec<Vec<u32>> = examples.iter().map(|e| lookup_oracle(e, s)).collect();
    score(examples, &preds).unwrap().accuracy()
}

/// Accuracy of `guess` (which never sees the context) is chance within 4 binomial standard errors.
fn assert_chance(examples: &[ProbeExample], s: &RecallSyntax, mut guess: impl FnMut() -> u32) {
    let preds: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| e.targets.iter().map(|_| guess()).collect())
        .collect();
    let sc = score(examples, &preds).unwrap();
    let p = s.chance();
    let se = (p * (1.0 - p) / sc.total as f64).sqrt();
    assert!(
        (sc.accuracy() - p).abs() < 4.0 * se,
        "accuracy {} over {} targets, chance {p} ± {se}",
        sc.accuracy(),
        sc.total
    );
}

/// A small deterministic generator for the guessing predictors.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    }
}

#[test]
fn mqar_oracle_is_perfect_and_guesses_are_at_chance() {
    for syntax in [language().syntax(), RecallSyntax::bytes()] {
        let cfg = MqarConfig {
            pairs: 16,
            queries: 12,
            syntax: syntax.clone(),
        };
        let examples = mqar(&cfg, 300, 9).unwrap();
        let per_example = 16 * (syntax.fact_prefix.len() + syntax.infix.len() + 2)
            + 12 * (syntax.query_prefix.len() + syntax.infix.len() + 2);
        assert!(examples
            .iter()
            .all(|e| e.tokens.len() == per_example && e.targets.len() == 12));
        for e in &examples {
            for &(p, v) in &e.targets {
                assert_eq!(e.tokens[p + 1], v, "the target is the next token");
            }
        }
        assert_eq!(oracle_accuracy(&examples, &syntax), 1.0);
        let mut r = lcg(1);
        let values = syntax.values.clone();
        assert_chance(&examples, &syntax, || {
            values[(r() % values.len() as u64) as usize]
        });
        assert_chance(&examples, &syntax, || syntax.values[0]);
        assert_eq!(
            mqar(&cfg, 300, 9).unwrap(),
            examples,
            "deterministic per seed"
        );
        assert_ne!(mqar(&cfg, 300, 10).unwrap(), examples);
    }
}

/// In the synthetic language a NIAH example is a sentence of the language (finite true NLL at
/// every token) whose answer has zero NLL: the probe is in-distribution for a model trained on it.
#[test]
fn niah_in_the_synthetic_language_is_grammatical_and_well_placed() {
    let lang = language();
    let syntax = lang.syntax();
    for context_len in [64, 300] {
        for depth in [0.0, 0.3, 1.0] {
            let examples = niah(&syntax, context_len, depth, 40, 5, &lang).unwrap();
            assert_eq!(oracle_accuracy(&examples, &syntax), 1.0);
            let hay = context_len - 3;
            for e in &examples {
                assert_eq!(e.tokens.len(), context_len);
                let nll = lang.score(&e.tokens);
                assert!(
                    nll.iter().all(|x| x.is_finite()),
                    "ungrammatical: {:?}",
                    e.tokens
                );
                let (p, v) = e.targets[0];
                assert_eq!((e.tokens[p + 1], nll[p + 1]), (v, 0.0));
                let key = e.tokens[p];
                let at = e
                    .tokens
                    .windows(2)
                    .position(|w| w == [syntax.fact_prefix[0], key])
                    .unwrap();
                let wanted = (depth * (hay - 3) as f64).round() as usize;
                // The first segment boundary at or after the wanted position.
                assert!(
                    at >= wanted && at <= wanted + 16,
                    "needle at {at}, wanted {wanted}"
                );
            }
        }
    }
    let all = niah(&syntax, 200, 0.5, 3000, 1, &lang).unwrap();
    let mut r = lcg(2);
    assert_chance(&all, &syntax, || syntax.values[(r() % 32) as usize]);
    assert_chance(&all, &syntax, || syntax.values[7]);
}

#[test]
fn niah_in_byte_text_places_the_needle_exactly() {
    let ds = corpus(TokenizerConfig::Byte, "bytes");
    let syntax = ds.recall_syntax().unwrap();
    assert_eq!(syntax, RecallSyntax::bytes());
    let stmt = syntax.fact_prefix.len() + syntax.infix.len() + 2;
    let query = stmt;
    for depth in [0.0, 0.5, 1.0] {
        // Longer than a window, so the filler is a contiguous stretch of the corpus.
        let examples = niah(&syntax, 400, depth, 30, 3, &ds).unwrap();
        assert_eq!(oracle_accuracy(&examples, &syntax), 1.0);
        for e in &examples {
            let key = e.tokens[e.targets[0].0 - syntax.infix.len()];
            let needle = [&syntax.fact_prefix[..], &[key], &syntax.infix].concat();
            let hits: Vec<usize> = (0..e.tokens.len() - needle.len())
                .filter(|&i| e.tokens[i..i + needle.len()] == needle[..])
                .collect();
            assert_eq!(hits.len(), 2, "statement and query only");
            assert_eq!(
                hits[0],
                (depth * (400 - query - stmt) as f64).round() as usize
            );
            assert_eq!(hits[1], 400 - query);
        }
    }
}

#[test]
fn grids_generate_every_cell_and_reject_bad_settings() {
    let grid = ProbeGrid::from_yaml_str(
        "seed: 4\nmqar: { pairs: [2, 8, 32], queries: 2, examples: 10 }\n\
         niah: { context_lengths: [128, 512], depths: [0.0, 0.5, 1.0], examples: 5 }",
    )
    .unwrap();
    let lang = language();
    let sets = grid.generate(&lang).unwrap();
    assert_eq!(sets.len(), 3 + 2 * 3);
    assert_eq!(
        sets[0].task,
        ProbeTask::Mqar {
            pairs: 2,
            queries: 2
        }
    );
    assert_eq!(sets[8].task.to_string(), "niah len=512 depth=1.00");
    assert!(sets.iter().all(|s| s.chance == 1.0 / 32.0));
    assert!(sets[..3].iter().all(|s| s.examples.len() == 10));
    assert!(sets[3..].iter().all(|s| s.examples.len() == 5));

    let bpe = corpus(
        TokenizerConfig::Bpe {
            vocab_size: 300,
            min_frequency: 2,
        },
        "bpe",
    );
    let e = grid.generate(&bpe).unwrap_err().to_string();
    assert!(e.starts_with("syntax = (absent)"), "{e}");

    for (yaml, field) in [
        (
            "niah: { context_lengths: [64], depths: [0.5, 1.5], examples: 1 }",
            "niah.depths[1] = 1.5",
        ),
        (
            "mqar: { pairs: [4, 2], queries: 3, examples: 1 }",
            "mqar.queries = 3",
        ),
        ("mqar: { pairs: [4], examples: 0 }", "mqar.examples = 0"),
    ] {
        let e = ProbeGrid::from_yaml_str(yaml).unwrap_err().to_string();
        assert!(e.starts_with(field), "{yaml}: {e}");
    }
    let e = ProbeGrid::from_yaml_str("mqar: { pairs: [4], exampels: 3 }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `exampels`"), "{e}");
    let too_many = ProbeGrid::from_yaml_str("mqar: { pairs: [33], examples: 1 }").unwrap();
    let e = too_many.generate(&lang).unwrap_err().to_string();
    assert!(e.starts_with("mqar.pairs = 33"), "{e}");
    let mut bad_ids = RecallSyntax::bytes();
    bad_ids.values.push(300);
    let e = niah(&bad_ids, 64, 0.5, 1, 0, &lang)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("syntax.values"), "{e}");
    let mut overlapping = RecallSyntax::bytes();
    overlapping.values[0] = overlapping.keys[0];
    let cfg = MqarConfig {
        pairs: 2,
        queries: 1,
        syntax: overlapping,
    };
    let e = mqar(&cfg, 1, 0).unwrap_err().to_string();
    assert!(e.contains("keys and values must be distinct"), "{e}");
}

#[test]
fn score_counts_and_checks_shapes() {
    let ex = ProbeExample {
        tokens: vec![1, 2, 3, 4],
        targets: vec![(1, 3), (2, 4)],
    };
    let s = score(&[ex.clone(), ex.clone()], &[vec![3, 4], vec![3, 9]]).unwrap();
    assert_eq!((s.correct, s.total, s.accuracy()), (3, 4, 0.75));
    assert!(score(std::slice::from_ref(&ex), &[]).is_err());
    let e = score(&[ex], &[vec![3]]).unwrap_err().to_string();
    assert!(
        e.contains("example 0 has 2 targets but 1 predictions"),
        "{e}"
    );
}
