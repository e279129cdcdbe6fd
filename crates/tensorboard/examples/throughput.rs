//! Measures the writer: scalars and 64-value histograms per second, and bytes per record.
//!
//! `cargo run --release -p scalelab-tensorboard --example throughput [DIR]`

use std::time::Instant;

use scalelab_tensorboard::SummaryWriter;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("scalelab-tb-throughput"));
    let mut tb = SummaryWriter::create(&dir)?;
    let before = std::fs::metadata(tb.path())?.len();

    let n = 1_000_000u64;
    let t = Instant::now();
    for step in 0..n {
        tb.add_scalar("train/loss", step, 1.0 / (step + 1) as f64)?;
    }
    tb.flush()?;
    let scalar_s = t.elapsed().as_secs_f64();
    let after_scalars = std::fs::metadata(tb.path())?.len();

    let loads: Vec<f64> = (0..64).map(|e| (e % 7) as f64 / 64.0).collect();
    let m = 100_000u64;
    let t = Instant::now();
    for step in 0..m {
        tb.add_histogram("moe/layer0/expert_load", step, &loads)?;
    }
    tb.flush()?;
    let histo_s = t.elapsed().as_secs_f64();
    let after_histos = std::fs::metadata(tb.path())?.len();

    println!(
        "scalars:    {:>9.0}/s, {:.1} bytes each",
        n as f64 / scalar_s,
        (after_scalars - before) as f64 / n as f64
    );
    println!(
        "histograms: {:>9.0}/s, {:.1} bytes each (64 values, 30 buckets)",
        m as f64 / histo_s,
        (after_histos - after_scalars) as f64 / m as f64
    );
    let path = tb.path().to_path_buf();
    drop(tb);
    std::fs::remove_file(path)?;
    Ok(())
}
