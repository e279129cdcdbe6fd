//! The training loop on a tiny model: loss falls, runs repeat bit for bit, resuming equals not
//! stopping, checkpoints survive crashes and report corruption, a diverging loss stops the run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use scalelab_train::{train, Budget, RunConfig, Summary, TrainError, TrainOptions};

type B = Autodiff<NdArray>;

/// Burn's CPU backends seed one process-wide generator: tests that initialize models take turns,
/// so a seed always draws the same weights.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

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
        max_memory: None,
    }
}

/// Trains `run` in `dir` on the default device, from scratch or resuming its latest checkpoint.
fn train_in(run: &RunConfig, dir: &Path, resume: bool) -> Result<Summary, TrainError> {
    train::<B>(run, dir, &Default::default(), &opts(resume))
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
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(150);
    let s = train_in(&run, dir.path(), false).unwrap();
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
    let _serial = serial();
    let run = tiny_run(40);
    let whole = tempfile::tempdir().unwrap();
    train_in(&run, whole.path(), false).unwrap();
    let again = tempfile::tempdir().unwrap();
    train_in(&run, again.path(), false).unwrap();
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
    let resumed = train_in(&run, &dir, true).unwrap();
    assert!(resumed.completed);
    assert_eq!(
        losses(&dir),
        losses(whole.path()),
        "resumed run differs from the uninterrupted one"
    );
}

#[test]
fn existing_run_is_not_overwritten_and_changed_config_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(5);
    train_in(&run, dir.path(), false).unwrap();
    let err = train_in(&run, dir.path(), false).unwrap_err();
    assert!(
        matches!(err, TrainError::RunExists { step: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--resume"));
    let mut changed = run.clone();
    changed.train.lr = 1e-2;
    let err = train_in(&changed, dir.path(), true).unwrap_err();
    assert!(matches!(err, TrainError::ConfigChanged { .. }), "{err}");
    assert!(err.to_string().contains("lr"), "{err}");
}

/// A 15-step run with checkpoints at steps 5, 10 and 15, made to look killed after its last
/// checkpoint and before its summary.
fn killed_run(dir: &Path) -> RunConfig {
    let mut run = tiny_run(15);
    run.train.keep_checkpoints = 3;
    train_in(&run, dir, false).unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    run
}

fn checkpoint(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join(format!("checkpoints/step-{step:08}"))
}

fn truncate(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// The steps of the SessionLog START events in the run's newest TensorBoard file.
fn session_starts(dir: &Path) -> Vec<i64> {
    use prost::Message;
    use scalelab_tensorboard::proto::{event::What, Event};
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut f = std::fs::File::open(files.last().unwrap()).unwrap();
    let mut starts = Vec::new();
    while let Some(rec) = scalelab_tensorboard::record::read_record(&mut f).unwrap() {
        let ev = Event::decode(rec.as_slice()).unwrap();
        if let Some(What::SessionLog(s)) = ev.what {
            assert_eq!(s.status, 1);
            starts.push(ev.step);
        }
    }
    starts
}

#[test]
fn resume_takes_the_newest_intact_checkpoint_whatever_latest_says() {
    let _serial = serial();
    let whole = tempfile::tempdir().unwrap();
    let mut run = tiny_run(15);
    run.train.keep_checkpoints = 3;
    train_in(&run, whole.path(), false).unwrap();
    type Damage = fn(&Path);
    let damage: [(&str, Damage); 4] = [
        ("truncated model", |d| {
            truncate(&checkpoint(d, 15).join("model.mpk"))
        }),
        ("empty state.json", |d| {
            std::fs::write(checkpoint(d, 15).join("state.json"), "").unwrap()
        }),
        ("no latest file", |d| {
            std::fs::remove_file(d.join("checkpoints/latest")).unwrap();
            std::fs::remove_dir_all(checkpoint(d, 15)).unwrap();
        }),
        ("latest names a missing directory", |d| {
            std::fs::remove_dir_all(checkpoint(d, 15)).unwrap()
        }),
    ];
    for (what, damage) in damage {
        let dir = tempfile::tempdir().unwrap();
        let run = killed_run(dir.path());
        damage(dir.path());
        let s = train_in(&run, dir.path(), true).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(s.completed, "{what}");
        assert_eq!(losses(dir.path()), losses(whole.path()), "{what}");
        assert_eq!(session_starts(dir.path()), vec![11], "{what}");
    }
}

#[test]
fn resume_without_an_intact_checkpoint_refuses_and_changes_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = killed_run(dir.path());
    for step in [5, 10, 15] {
        truncate(&checkpoint(dir.path(), step).join("optim.mpk"));
    }
    let metrics = std::fs::read(dir.path().join("metrics.jsonl")).unwrap();
    let err = train_in(&run, dir.path(), true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{msg}");
    for step in ["step-00000005", "step-00000010", "step-00000015"] {
        assert!(msg.contains(step), "{step} not named: {msg}");
    }
    assert!(
        msg.contains("optim.mpk") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("metrics.jsonl")).unwrap(),
        metrics
    );
    assert!(checkpoint(dir.path(), 15).exists());
}

#[test]
fn stale_temporary_checkpoints_are_cleaned_at_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = killed_run(dir.path());
    let stale = dir.path().join("checkpoints/.step-00000020.tmp-4242");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.mpk"), b"half").unwrap();
    train_in(&run, dir.path(), true).unwrap();
    assert!(!stale.exists());
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(10);
    let done = train_in(&run, dir.path(), false).unwrap();
    let snapshot = |d: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = walk(d)
            .into_iter()
            .filter(|p| !p.ends_with(".lock"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = snapshot(dir.path());
    let again = train_in(&run, dir.path(), true).unwrap();
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(again.steps, done.steps);
    assert_eq!(again.train_loss, done.train_loss);
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_run_directory_in_use_is_refused_naming_the_holder() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let _held = scalelab_train::lock::DirLock::acquire(dir.path(), "run").unwrap();
    let err = train_in(&tiny_run(5), dir.path(), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Locked { .. }), "{msg}");
    assert!(
        msg.contains(&format!("process {}", std::process::id())),
        "{msg}"
    );
    assert!(!dir.path().join("config.yaml").exists());
}

#[test]
fn diverging_loss_stops_with_step_and_last_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut run = tiny_run(200);
    run.train.lr = 1e9;
    run.train.warmup_steps = 0;
    run.train.grad_clip = 0.0;
    let err = train_in(&run, dir.path(), false).unwrap_err();
    match &err {
        TrainError::NonFinite { step, .. } => assert!(*step >= 1),
        other => panic!("expected a non-finite loss, got {other}"),
    }
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
}

#[test]
fn a_run_too_large_for_the_memory_limit_is_refused_with_its_sizes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut run = tiny_run(5);
    run.model.hidden_size = 1 << 20;
    run.model.ffn.width = None;
    let o = TrainOptions {
        max_memory: Some(8 << 30),
        ..opts(false)
    };
    let err = train::<B>(&run, dir.path(), &Default::default(), &o).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::TooLarge { .. }), "{msg}");
    assert!(
        msg.contains("weights") && msg.contains("AdamW state") && msg.contains("8.0 GiB"),
        "{msg}"
    );
    assert!(!dir.path().join("config.yaml").exists());
}

#[test]
fn bad_settings_name_the_field() {
    let _serial = serial();
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
    let _serial = serial();
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
