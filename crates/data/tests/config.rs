//! The data-config schema: shipped examples parse, defaults are what the docs say, and each bad
//! file in `tests/bad/` fails with a message naming the field (its first line says which).

use std::path::{Path, PathBuf};

use scalelab_data::probes::ProbeGrid;
use scalelab_data::{
    DataConfig, DataError, InvalidUtf8, SyntheticConfig, TextConfig, TokenizerConfig,
};
use scalelab_tests::each_bad_file_is_refused;

fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn kind_synthetic_alone_is_the_documented_default() {
    let cfg = DataConfig::from_yaml_str("kind: synthetic").unwrap();
    assert_eq!(cfg, DataConfig::Synthetic(SyntheticConfig::default()));
    assert_eq!(cfg, DataConfig::default());
    let shipped = DataConfig::from_yaml_file(crate_dir().join("examples/synthetic.yaml")).unwrap();
    assert_eq!(shipped, cfg, "examples/synthetic.yaml lists the defaults");
    assert_eq!(DataConfig::from_yaml_str(&cfg.to_yaml()).unwrap(), cfg);
}

#[test]
fn text_configs_parse_with_defaults_and_round_trip() {
    let cfg = DataConfig::from_yaml_str("kind: text\npath: corpus").unwrap();
    assert_eq!(cfg, DataConfig::Text(TextConfig::new("corpus")));
    let gcide = DataConfig::from_yaml_file(crate_dir().join("examples/gcide-bpe.yaml")).unwrap();
    let DataConfig::Text(t) = &gcide else {
        panic!("not text")
    };
    assert_eq!(
        t.tokenizer,
        TokenizerConfig::Bpe {
            vocab_size: 4096,
            min_frequency: 2
        }
    );
    assert_eq!(t.invalid_utf8, InvalidUtf8::Replace);
    assert_eq!(DataConfig::from_yaml_str(&gcide.to_yaml()).unwrap(), gcide);
    DataConfig::from_yaml_file(crate_dir().join("examples/gcide.yaml")).unwrap();
    let grid = std::fs::read_to_string(crate_dir().join("examples/probes.yaml")).unwrap();
    let grid = ProbeGrid::from_yaml_str(&grid).unwrap();
    assert_eq!(grid.niah.unwrap().depths.len(), 5);
}

#[test]
fn every_bad_file_names_its_field() {
    let n = each_bad_file_is_refused(&crate_dir().join("tests/bad"), false, |path| {
        match DataConfig::from_yaml_file(path) {
            Ok(cfg) => panic!("{} parsed: {cfg:?}", path.display()),
            Err(e) => {
                if let DataError::Parse(p) = &e {
                    assert_eq!(p.origin, path.display().to_string());
                }
                Err(e.to_string())
            }
        }
    });
    assert!(n >= 15, "{n}");
}

#[test]
fn errors_can_name_the_section_they_sit_in() {
    let e = DataConfig::from_yaml_str("kind: synthetic\ncopy: { prob: 2.0 }")
        .unwrap_err()
        .in_section("data");
    assert!(e.to_string().starts_with("data.copy.prob = 2: "), "{e}");
}
