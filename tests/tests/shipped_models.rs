//! Every shipped config small enough to instantiate on a CPU builds a model whose parameter
//! count is exactly the analytic one, and runs a forward pass with finite logits.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use scalelab_blocks::{HybridDecoder, ModelConfigExt, Module};
use scalelab_config::ModelConfig;
use scalelab_tests::yaml_files;

type B = NdArray;

#[test]
fn small_shipped_models_match_their_analytic_counts_and_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut built = 0;
    for path in yaml_files(&root) {
        let cfg = ModelConfig::from_yaml_file(&path).unwrap();
        if cfg.param_count().total > 100_000_000 {
            continue; // analytic count only: checked against the paper in scalelab-config
        }
        let device = Default::default();
        let model: HybridDecoder<B> = cfg.init(&device);
        assert_eq!(
            model.num_params() as u64,
            cfg.param_count().total,
            "{}",
            path.display()
        );
        let ids: Vec<i64> = (0..16).map(|i| (i * 31 % cfg.vocab_size) as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, 16]), &device);
        let logits = model.forward(tokens).logits;
        assert_eq!(logits.dims(), [1, 16, cfg.vocab_size]);
        assert!(
            logits.is_finite().all().into_scalar(),
            "{}: non-finite logits",
            path.display()
        );
        built += 1;
    }
    assert!(
        built >= 7,
        "only {built} shipped configs were small enough to build"
    );
}
