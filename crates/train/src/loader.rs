//! Training batches made on a thread of their own, so the host prepares the next batch while
//! the device runs the current step.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use scalelab_data::{Dataset, Split};

/// Inputs and next-token targets of `batch` sequences, each `[batch, seq_len]`, on the host.
pub struct HostBatch {
    inputs: TensorData,
    targets: TensorData,
}

impl HostBatch {
    /// Sequences `first .. first + batch` of `split`, each `seq_len` tokens plus the next.
    pub fn read(
        data: &dyn Dataset,
        split: Split,
        first: u64,
        batch: usize,
        seq_len: usize,
    ) -> Self {
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for i in 0..batch as u64 {
            let seq = data.sequence(split, first + i, seq_len + 1);
            inputs.extend(seq[..seq_len].iter().map(|&t| t as i64));
            targets.extend(seq[1..].iter().map(|&t| t as i64));
        }
        Self {
            inputs: TensorData::new(inputs, [batch, seq_len]),
            targets: TensorData::new(targets, [batch, seq_len]),
        }
    }

    /// Copies the batch to `device`: `(inputs, targets)`.
    pub fn upload<B: Backend>(self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        (
            Tensor::from_data(self.inputs, device),
            Tensor::from_data(self.targets, device),
        )
    }
}

/// The training split's batches in order, from sequence `first` on, read `AHEAD` batches ahead
/// on a worker thread. Dropping it stops the worker.
pub struct Prefetch {
    rx: Option<Receiver<HostBatch>>,
    worker: Option<JoinHandle<()>>,
}

/// Batches the worker keeps ready.
const AHEAD: usize = 2;

impl Prefetch {
    /// Starts the worker at sequence `first`; each batch takes the next `batch` sequences.
    pub fn start(data: Arc<dyn Dataset>, first: u64, batch: usize, seq_len: usize) -> Self {
        let (tx, rx) = sync_channel(AHEAD);
        let worker = std::thread::Builder::new()
            .name("scalelab-batches".into())
            .spawn(move || {
                let mut next = first;
                loop {
                    let b = HostBatch::read(data.as_ref(), Split::Train, next, batch, seq_len);
                    if tx.send(b).is_err() {
                        return;
                    }
                    next += batch as u64;
                }
            })
            .expect("the OS can start a thread");
        Self {
            rx: Some(rx),
            worker: Some(worker),
        }
    }

    /// The next batch (waits only if the worker is behind).
    pub fn next(&self) -> HostBatch {
        self.rx
            .as_ref()
            .and_then(|rx| rx.recv().ok())
            .expect("the batch worker thread panicked")
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
