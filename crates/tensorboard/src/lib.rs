//! TensorBoard event files for scalelab runs: scalars, histograms, text and hparams.
//!
//! A small writer on `prost` (messages derived by hand, no `protoc`) and `crc32c` (TFRecord
//! framing); see the crate README for why not `tensorboard-rs`. Every I/O error is returned,
//! never a panic.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use scalelab_tensorboard::{HParamValue, SessionStatus, SummaryWriter};
//!
//! let mut tb = SummaryWriter::create("runs/dense-125m")?;
//! let hparams = BTreeMap::from([
//!     ("lr".to_string(), HParamValue::from(3e-4)),
//!     ("arch".to_string(), HParamValue::from("dense")),
//! ]);
//! tb.add_hparams(&hparams, &["loss", "val_loss"])?;
//! for step in 0..100u64 {
//!     tb.add_scalar("loss", step, 2.0 / (step + 1) as f64)?;
//! }
//! tb.add_histogram("moe/layer0/expert_load", 99, &[0.1, 0.3, 0.2, 0.4])?;
//! tb.close_session(SessionStatus::Success)?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod proto;
pub mod record;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use proto::{
    event, h_params_plugin_data, hparam_data_type, proto_value, session_status, summary_value,
    Event, Experiment, HParamInfo, HParamsPluginData, HistogramProto, MetricInfo, MetricName,
    PluginData, ProtoValue, SessionEndInfo, SessionStartInfo, Summary, SummaryMetadata,
    SummaryValue, TensorProto, TensorShapeDim, TensorShapeProto, DT_FLOAT, DT_STRING,
};

/// The first record of every event file; TensorBoard checks it to pick the reader semantics.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Buckets of [`SummaryWriter::add_histogram`], as TensorBoard's own `tf.summary.histogram`.
pub const DEFAULT_HISTOGRAM_BUCKETS: usize = 30;

/// Tags the hparams plugin reads (`tensorboard.plugins.hparams.metadata`).
const EXPERIMENT_TAG: &str = "_hparams_/experiment";
const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";
const SESSION_END_INFO_TAG: &str = "_hparams_/session_end_info";
const HPARAMS_PLUGIN: &str = "hparams";
const TEXT_PLUGIN: &str = "text";

/// A hyperparameter value: TensorBoard's HParams tab knows numbers, strings and booleans.
#[derive(Clone, Debug, PartialEq)]
pub enum HParamValue {
    /// A number (integers too: the tab stores float64).
    Number(f64),
    /// A string, e.g. an architecture name.
    String(String),
    /// A flag.
    Bool(bool),
}

impl From<f64> for HParamValue {
    fn from(v: f64) -> Self {
        Self::Number(v)
    }
}

impl From<f32> for HParamValue {
    fn from(v: f32) -> Self {
        Self::Number(v.into())
    }
}

impl From<i64> for HParamValue {
    fn from(v: i64) -> Self {
        Self::Number(v as f64)
    }
}

impl From<u64> for HParamValue {
    fn from(v: u64) -> Self {
        Self::Number(v as f64)
    }
}

impl From<usize> for HParamValue {
    fn from(v: usize) -> Self {
        Self::Number(v as f64)
    }
}

impl From<bool> for HParamValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for HParamValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_string())
    }
}

impl From<String> for HParamValue {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

/// How a run (an hparams "session") ended, shown in the HParams tab's status column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Finished normally.
    Success,
    /// Failed (diverged, crashed, out of memory).
    Failure,
    /// Still running; for a checkpoint of an unfinished run.
    Running,
    /// Not known.
    Unknown,
}

impl SessionStatus {
    fn proto(self) -> i32 {
        match self {
            Self::Success => session_status::SUCCESS,
            Self::Failure => session_status::FAILURE,
            Self::Running => session_status::RUNNING,
            Self::Unknown => session_status::UNKNOWN,
        }
    }
}

/// Writes one TensorBoard event file into a run directory.
///
/// Records go through a `BufWriter`: they reach the file on [`flush`](Self::flush), on
/// [`close_session`](Self::close_session), when the buffer fills, and on drop (where an error
/// can only be ignored: call `flush` to see it).
pub struct SummaryWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl SummaryWriter {
    /// Creates `dir` if needed and a new event file in it, named
    /// `events.out.tfevents.<unix time>.<hostname>.<pid>.scalelab`, starting with the
    /// `brain.Event:2` file-version record. Never overwrites: a name taken (two writers in one
    /// second) gets a counter before `.scalelab`.
    pub fn create(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir)?;
        let now = wall_time();
        let base = format!(
            "events.out.tfevents.{}.{}.{}",
            now as u64,
            hostname(),
            std::process::id()
        );
        let mut attempt = 0u32;
        let (path, file) = loop {
            let name = if attempt == 0 {
                format!("{base}.scalelab")
            } else {
                format!("{base}.{attempt}.scalelab")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        writer.write_event(Event {
            wall_time: now,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a (re)start at `step`: TensorBoard discards the events earlier files of the same
    /// directory logged at `step` or later, so a resumed run shows one history, not two.
    pub fn session_start(&mut self, step: u64) -> io::Result<()> {
        self.write_event(Event {
            wall_time: wall_time(),
            step: step as i64,
            what: Some(event::What::SessionLog(proto::SessionLog {
                status: 1,
                msg: format!("resumed at step {step}"),
            })),
        })
    }

    /// Logs a scalar series point. TensorBoard stores it as float32 (`simple_value`), so
    /// about 7 significant digits survive (enough for plotting FLOPs up to 3e38).
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f64) -> io::Result<()> {
        self.write_value(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary_value::Value::SimpleValue(value as f32)),
            },
        )
    }

    /// Logs a histogram of `values` in [`DEFAULT_HISTOGRAM_BUCKETS`] equal-width buckets
    /// between their min and max; see [`histogram`]. Non-finite values are an `InvalidInput`
    /// error and nothing is written.
    pub fn add_histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> io::Result<()> {
        let histo = histogram(values, DEFAULT_HISTOGRAM_BUCKETS)?;
        self.write_value(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary_value::Value::Histo(histo)),
            },
        )
    }

    /// Logs Markdown text (TensorBoard's Text tab), e.g. the run's config in a code block.
    pub fn add_text(&mut self, tag: &str, step: u64, markdown: &str) -> io::Result<()> {
        self.write_value(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: Some(plugin_metadata(TEXT_PLUGIN, Vec::new())),
                value: Some(summary_value::Value::Tensor(TensorProto {
                    dtype: DT_STRING,
                    tensor_shape: Some(shape(&[1])),
                    float_val: Vec::new(),
                    string_val: vec![markdown.as_bytes().to_vec()],
                })),
            },
        )
    }

    /// Declares this run as an hparams session: writes the experiment (hparam names and types,
    /// and `metric_tags`, scalar tags of this run that the HParams tab shows as columns) and
    /// the session start with the values. Call once, before training.
    ///
    /// Each run of a sweep writes its own experiment and TensorBoard shows one of them, so the
    /// runs of a sweep should log the same hparam names and metric tags.
    pub fn add_hparams(
        &mut self,
        hparams: &BTreeMap<String, HParamValue>,
        metric_tags: &[&str],
    ) -> io::Result<()> {
        let now = wall_time();
        let experiment = Experiment {
            time_created_secs: now,
            hparam_infos: hparams
                .iter()
                .map(|(name, value)| HParamInfo {
                    name: name.clone(),
                    r#type: match value {
                        HParamValue::Number(_) => hparam_data_type::FLOAT64,
                        HParamValue::String(_) => hparam_data_type::STRING,
                        HParamValue::Bool(_) => hparam_data_type::BOOL,
                    },
                    ..Default::default()
                })
                .collect(),
            metric_infos: metric_tags
                .iter()
                .map(|tag| MetricInfo {
                    name: Some(MetricName {
                        group: String::new(),
                        tag: (*tag).to_string(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.write_hparams(
            EXPERIMENT_TAG,
            h_params_plugin_data::Data::Experiment(experiment),
        )?;
        let start = SessionStartInfo {
            hparams: hparams
                .iter()
                .map(|(name, value)| {
                    let kind = match value {
                        HParamValue::Number(v) => proto_value::Kind::NumberValue(*v),
                        HParamValue::String(v) => proto_value::Kind::StringValue(v.clone()),
                        HParamValue::Bool(v) => proto_value::Kind::BoolValue(*v),
                    };
                    (name.clone(), ProtoValue { kind: Some(kind) })
                })
                .collect(),
            start_time_secs: now,
            ..Default::default()
        };
        self.write_hparams(
            SESSION_START_INFO_TAG,
            h_params_plugin_data::Data::SessionStartInfo(start),
        )
    }

    /// Ends the hparams session with `status` and flushes. Not written on drop: a run that
    /// never closes shows no status.
    pub fn close_session(&mut self, status: SessionStatus) -> io::Result<()> {
        let end = SessionEndInfo {
            status: status.proto(),
            end_time_secs: wall_time(),
        };
        self.write_hparams(
            SESSION_END_INFO_TAG,
            h_params_plugin_data::Data::SessionEndInfo(end),
        )?;
        self.flush()
    }

    /// Pushes buffered records to the file, so that a running TensorBoard sees them.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_hparams(&mut self, tag: &str, data: h_params_plugin_data::Data) -> io::Result<()> {
        let content = HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        self.write_value(
            0,
            SummaryValue {
                tag: tag.to_string(),
                metadata: Some(plugin_metadata(HPARAMS_PLUGIN, content)),
                // What TensorBoard's own hparams summaries carry: an empty float vector.
                value: Some(summary_value::Value::Tensor(TensorProto {
                    dtype: DT_FLOAT,
                    tensor_shape: Some(shape(&[0])),
                    float_val: Vec::new(),
                    string_val: Vec::new(),
                })),
            },
        )
    }

    fn write_value(&mut self, step: u64, value: SummaryValue) -> io::Result<()> {
        let step = i64::try_from(step).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "step does not fit in an int64")
        })?;
        self.write_event(Event {
            wall_time: wall_time(),
            step,
            what: Some(event::What::Summary(Summary { value: vec![value] })),
        })
    }

    fn write_event(&mut self, event: Event) -> io::Result<()> {
        record::write_record(&mut self.out, &event.encode_to_vec())
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; `flush` reports them to callers who care.
        let _ = self.out.flush();
    }
}

/// Buckets `values` into `buckets` equal-width buckets spanning `[min, max]` (one bucket when
/// all values are equal, none when there are no values).
///
/// Equal-width, as TensorBoard's current `tf.summary.histogram`, rather than TF1's ~1500
/// exponential buckets: expert loads span a narrow range that exponential buckets would put
/// in one or two bars. `bucket_limit[i]` is the right edge of bucket `i`, the last one is
/// `max`; a value on an inner edge counts in the bucket to its right.
pub fn histogram(values: &[f64], buckets: usize) -> io::Result<HistogramProto> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("histogram value {bad} is not finite"),
        ));
    }
    let buckets = buckets.max(1);
    let mut h = HistogramProto::default();
    if values.is_empty() {
        return Ok(h);
    }
    h.min = values.iter().copied().fold(f64::INFINITY, f64::min);
    h.max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    h.num = values.len() as f64;
    h.sum = values.iter().sum();
    h.sum_squares = values.iter().map(|v| v * v).sum();
    if h.min == h.max {
        h.bucket_limit = vec![h.max];
        h.bucket = vec![h.num];
        return Ok(h);
    }
    let width = (h.max - h.min) / buckets as f64;
    h.bucket_limit = (1..=buckets).map(|i| h.min + i as f64 * width).collect();
    h.bucket_limit[buckets - 1] = h.max;
    h.bucket = vec![0.0; buckets];
    for v in values {
        let i = (((v - h.min) / width) as usize).min(buckets - 1);
        h.bucket[i] += 1.0;
    }
    Ok(h)
}

fn plugin_metadata(plugin_name: &str, content: Vec<u8>) -> SummaryMetadata {
    SummaryMetadata {
        plugin_data: Some(PluginData {
            plugin_name: plugin_name.to_string(),
            content,
        }),
    }
}

fn shape(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims.iter().map(|&size| TensorShapeDim { size }).collect(),
    }
}

/// Seconds since the UNIX epoch (0 if the clock is before it).
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name, made safe for one: from the kernel on Linux, else
/// `$HOSTNAME`, else `localhost`.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(path: &Path) -> Vec<Event> {
        let bytes = fs::read(path).unwrap();
        let mut r = &bytes[..];
        let mut out = Vec::new();
        while let Some(rec) = record::read_record(&mut r).unwrap() {
            out.push(Event::decode(&rec[..]).unwrap());
        }
        out
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "scalelab-tb-unit-{}-{name}-{}",
            std::process::id(),
            wall_time()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn histogram_equal_width() {
        let h = histogram(&[0.0, 1.0, 2.0, 3.0, 4.0], 4).unwrap();
        assert_eq!(
            (h.min, h.max, h.num, h.sum, h.sum_squares),
            (0.0, 4.0, 5.0, 10.0, 30.0)
        );
        assert_eq!(h.bucket_limit, vec![1.0, 2.0, 3.0, 4.0]);
        // [0,1) [1,2) [2,3) [3,4]: the max lands in the last bucket.
        assert_eq!(h.bucket, vec![1.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn histogram_edge_cases() {
        let h = histogram(&[2.5; 3], 30).unwrap();
        assert_eq!(
            (h.bucket_limit.clone(), h.bucket.clone()),
            (vec![2.5], vec![3.0])
        );
        let h = histogram(&[], 30).unwrap();
        assert_eq!(h, HistogramProto::default());
        let e = histogram(&[1.0, f64::NAN], 30).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let h = histogram(&[-1.0, 1.0], 0).unwrap();
        assert_eq!((h.bucket_limit, h.bucket), (vec![1.0], vec![2.0]));
    }

    #[test]
    fn histogram_counts_add_up() {
        let values: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f64 / 37.0)
            .collect();
        let h = histogram(&values, DEFAULT_HISTOGRAM_BUCKETS).unwrap();
        assert_eq!(h.bucket.len(), DEFAULT_HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket.iter().sum::<f64>(), 1000.0);
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*h.bucket_limit.last().unwrap(), h.max);
    }

    #[test]
    fn file_name_version_record_and_no_overwrite() {
        let dir = temp_dir("create");
        let a = SummaryWriter::create(&dir).unwrap();
        let b = SummaryWriter::create(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(
            name.ends_with(&format!(".{}.scalelab", std::process::id())),
            "{name}"
        );
        let ev = events(a.path());
        assert_eq!(ev.len(), 1);
        assert_eq!(
            ev[0].what,
            Some(event::What::FileVersion(FILE_VERSION.into()))
        );
        assert!(ev[0].wall_time > 1.6e9);
        drop((a, b));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drop_flushes_and_records_decode() {
        let dir = temp_dir("drop");
        let path = {
            let mut w = SummaryWriter::create(&dir).unwrap();
            w.add_scalar("loss", 7, 1.5).unwrap();
            w.add_text("config", 0, "`d_model: 512`").unwrap();
            w.path().to_path_buf()
        };
        let ev = events(&path);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[1].step, 7);
        let Some(event::What::Summary(s)) = &ev[1].what else {
            panic!("not a summary: {:?}", ev[1]);
        };
        assert_eq!(s.value[0].tag, "loss");
        assert_eq!(
            s.value[0].value,
            Some(summary_value::Value::SimpleValue(1.5))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hparams_encode_expected_plugin_data() {
        let dir = temp_dir("hparams");
        let mut w = SummaryWriter::create(&dir).unwrap();
        let hp = BTreeMap::from([
            ("lr".to_string(), HParamValue::from(1e-3)),
            ("moe".to_string(), HParamValue::from(true)),
        ]);
        w.add_hparams(&hp, &["val_loss"]).unwrap();
        w.close_session(SessionStatus::Failure).unwrap();
        let ev = events(w.path());
        let decode = |e: &Event| {
            let Some(event::What::Summary(s)) = &e.what else {
                panic!("not a summary");
            };
            let v = &s.value[0];
            let pd = v.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap();
            assert_eq!(pd.plugin_name, "hparams");
            (
                v.tag.clone(),
                HParamsPluginData::decode(&pd.content[..]).unwrap(),
            )
        };
        let (tag, exp) = decode(&ev[1]);
        assert_eq!(tag, EXPERIMENT_TAG);
        let Some(h_params_plugin_data::Data::Experiment(exp)) = exp.data else {
            panic!("not an experiment");
        };
        let names: Vec<_> = exp
            .hparam_infos
            .iter()
            .map(|i| (&i.name[..], i.r#type))
            .collect();
        assert_eq!(
            names,
            vec![
                ("lr", hparam_data_type::FLOAT64),
                ("moe", hparam_data_type::BOOL)
            ]
        );
        assert_eq!(exp.metric_infos[0].name.as_ref().unwrap().tag, "val_loss");
        let (tag, start) = decode(&ev[2]);
        assert_eq!(tag, SESSION_START_INFO_TAG);
        let Some(h_params_plugin_data::Data::SessionStartInfo(start)) = start.data else {
            panic!("not a session start");
        };
        assert_eq!(
            start.hparams["lr"].kind,
            Some(proto_value::Kind::NumberValue(1e-3))
        );
        let (tag, end) = decode(&ev[3]);
        assert_eq!(tag, SESSION_END_INFO_TAG);
        let Some(h_params_plugin_data::Data::SessionEndInfo(end)) = end.data else {
            panic!("not a session end");
        };
        assert_eq!(end.status, session_status::FAILURE);
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_reports_io_errors() {
        let dir = temp_dir("err");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        fs::write(&dir, b"a file, not a directory").unwrap();
        assert!(SummaryWriter::create(&dir).is_err());
        assert!(SummaryWriter::create(dir.join("below")).is_err());
        fs::remove_file(&dir).unwrap();
    }
}
