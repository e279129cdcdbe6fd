//! The training loop on a tiny model: loss falls, runs repeat bit for bit, resuming equals not
//! stopping, checkpoints survive crashes and report corruption, a diverging loss stops the run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use scalelab_train::{train, Budget, RunConfig, TrainError, TrainOptions};

type B = Autodiff<NdArray>;

fn tiny_run(steps: u64) -> RunConfig {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/tiny-hybrid-moe.yaml");
    let mut run = RunConfig::from_yaml_file(&path).unwrap();
    let t = &mut run.train;
    t.budget = Budget {
        steps: Some(steps),
        tokens: None,
        flops: None,
    };
    t.batch_size = 4;
    t.seq_len = 32;
    t.warmup_steps = 5;
    t.log_every = 2;
    t.eval_every = 10;
    t.eval_batches = 1;
    t.checkpoint_every = 5;
    t.probes = None;
    run
}

fn opts(resume: bool) -> TrainOptions {
    TrainOptions {
        resume,
        progress: false,
        stop: None,
        cache_dir: std::env::temp_dir().join("scalelab-test-cache"),
    }
}

fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v["train/loss"].as_f64()?))
        })
        .collect()
}

#[test]
fn loss_falls_on_the_synthetic_language() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(150);
    let s = train::<B>(&run, dir.path(), &Default::default(), &opts(false)).unwrap();
    let l = losses(dir.path());
    let first = l[0].1;
    assert!(
        first > 4.5,
        "an untrained 256-way model starts near ln 256 = 5.55, got {first}"
    );
    assert!(
        s.train_loss < first - 1.0,
        "loss did not fall: {first} -> {}",
        s.train_loss
    );
    assert!(s.val_loss.is_finite() && s.completed);
    assert_eq!(s.tokens, 150 * 4 * 32);
    for f in ["summary.json", "config.yaml", "metrics.jsonl"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    assert!(
        std::fs::read_dir(dir.path().join("tensorboard"))
            .unwrap()
            .count()
            > 0
    );
}

#[test]
fn same_seed_repeats_bit_for_bit_and_resume_equals_no_interruption() {
    let run = tiny_run(40);
    let whole = tempfile::tempdir().unwrap();
    train::<B>(&run, whole.path(), &Default::default(), &opts(false)).unwrap();
    let again = tempfile::tempdir().unwrap();
    train::<B>(&run, again.path(), &Default::default(), &opts(false)).unwrap();
    assert_eq!(
        losses(whole.path()),
        losses(again.path()),
        "same seed, different losses"
    );

    // Stop as Ctrl-C would, once the first checkpoint exists; then resume.
    let pieces = tempfile::tempdir().unwrap();
    let dir = pieces.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            while !dir.join("checkpoints/latest").exists() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let o = TrainOptions {
        stop: Some(stop),
        ..opts(false)
    };
    let partial = train::<B>(&run, &dir, &Default::default(), &o).unwrap();
    watcher.join().unwrap();
    assert!(
        !partial.completed && partial.steps < 40,
        "the run should have stopped early"
    );
    let resumed = train::<B>(&run, &dir, &Default::default(), &opts(true)).unwrap();
    assert!(resumed.completed);
    assert_eq!(
        losses(&dir),
        losses(whole.path()),
        "resumed run differs from the uninterrupted one"
    );
}

#[test]
fn existing_run_is_not_overwritten_and_changed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(5);
    train::<B>(&run, dir.path(), &Default::default(), &opts(false)).unwrap();
    let err = train::<B>(&run, dir.path(), &Default::default(), &opts(false)).unwrap_err();
    assert!(
        matches!(err, TrainError::RunExists { step: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--resume"));
    let mut changed = run.clone();
    changed.train.lr = 1e-2;
    let err = train::<B>(&changed, dir.path(), &Default::default(), &opts(true)).unwrap_err();
    assert!(matches!(err, TrainError::ConfigChanged { .. }), "{err}");
    assert!(err.to_string().contains("lr"), "{err}");
}

#[test]
fn truncated_checkpoint_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(10);
    train::<B>(&run, dir.path(), &Default::default(), &opts(false)).unwrap();
    let latest = std::fs::read_to_string(dir.path().join("checkpoints/latest")).unwrap();
    let model = dir
        .path()
        .join("checkpoints")
        .join(latest.trim())
        .join("model.mpk");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = train::<B>(&run, dir.path(), &Default::default(), &opts(true)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{msg}");
    assert!(
        msg.contains("model.mpk") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(
        msg.contains("step-00000005"),
        "the intact older checkpoint should be named: {msg}"
    );
}

#[test]
fn diverging_loss_stops_with_step_and_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = tiny_run(200);
    run.train.lr = 1e9;
    run.train.warmup_steps = 0;
    run.train.grad_clip = 0.0;
    let err = train::<B>(&run, dir.path(), &Default::default(), &opts(false)).unwrap_err();
    match &err {
        TrainError::NonFinite { step, .. } => assert!(*step >= 1),
        other => panic!("expected a non-finite loss, got {other}"),
    }
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
}

#[test]
fn bad_settings_name_the_field() {
    let mut run = tiny_run(5);
    run.train.batch_size = 0;
    assert!(run
        .validate()
        .unwrap_err()
        .to_string()
        .contains("train.batch_size = 0"));
    let mut run = tiny_run(5);
    run.train.budget = Budget {
        steps: Some(5),
        tokens: Some(100.0),
        flops: None,
    };
    assert!(run
        .validate()
        .unwrap_err()
        .to_string()
        .contains("exactly one of steps, tokens or flops"));
}

#[test]
fn untrained_model_scores_at_chance_on_the_probes() {
    use scalelab_blocks::ModelConfigExt;
    let run = tiny_run(1);
    let device = Default::default();
    let model = run.model.init::<NdArray>(&device);
    let data = scalelab_data::open(&run.data, 64, &std::env::temp_dir()).unwrap();
    let scores = scalelab_train::probes::run_probes(
        &model,
        &scalelab_train::probes::default_grid(),
        data.as_ref(),
        &device,
    )
    .unwrap();
    assert!(!scores.cells.is_empty());
    for c in &scores.cells {
        // An untrained model guesses: at most chance plus four binomial standard errors of the
        // targets scored (a few hundred per cell).
        let bound = c.chance + 4.0 * (c.chance * (1.0 - c.chance) / 100.0).sqrt();
        assert!(c.accuracy <= bound, "{c:?} is above chance");
    }
}
