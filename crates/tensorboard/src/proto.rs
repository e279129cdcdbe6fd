//! The subset of TensorBoard's protobuf messages this crate writes, derived by hand with
//! `prost` so that no `protoc` is needed at build time.
//!
//! Field numbers follow TensorBoard's own definitions (`tensorboard/compat/proto/event.proto`,
//! `summary.proto`, `tensor.proto`, `tensor_shape.proto`, `tensorboard/plugins/hparams/api.proto`,
//! `plugin_data.proto` and `google/protobuf/struct.proto`). Fields and oneof variants this crate
//! never sets are left out; a subset encodes to the same bytes as the full message with those
//! fields unset. Public so that tests elsewhere can decode what a [`crate::SummaryWriter`] wrote
//! (with [`crate::record::read_record`] and `prost::Message::decode`).

use std::collections::BTreeMap;

/// `tensorboard.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the UNIX epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step the summary belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "event::What", tags = "3, 5, 6")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub mod event {
    /// `Event.what` (subset).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of a file: `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Summary values.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        /// A session marker: `START` at a step makes TensorBoard drop the events an earlier
        /// attempt logged at that step and after (a resumed run's superseded history).
        #[prost(message, tag = "6")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorboard.SessionLog` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// `START = 1` (`CHECKPOINT = 2`, `STOP = 3`).
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Free text.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `tensorboard.Summary`: a list of tagged values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorboard.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// Tag (series name).
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Which plugin reads a tensor value; set the first time a tag is written.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value itself.
    #[prost(oneof = "summary_value::Value", tags = "2, 5, 8")]
    pub value: Option<summary_value::Value>,
}

/// Nested types of [`SummaryValue`].
pub mod summary_value {
    /// `Summary.Value.value` (subset).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A scalar, float32 on the wire.
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        /// A histogram.
        #[prost(message, tag = "5")]
        Histo(super::HistogramProto),
        /// A tensor interpreted by the plugin named in the metadata.
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `tensorboard.HistogramProto`: bucket `i` counts values in `[bucket_limit[i-1], bucket_limit[i])`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of the squared values.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edge of each bucket.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Count of each bucket.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorboard.DataType::DT_FLOAT`.
pub const DT_FLOAT: i32 = 1;
/// `tensorboard.DataType::DT_STRING`.
pub const DT_STRING: i32 = 7;

/// `tensorboard.TensorProto` (subset: dtype, shape and the float and string value lists).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Element type (`DataType` enum, an int32 on the wire).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Elements of a `DT_FLOAT` tensor.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// Elements of a `DT_STRING` tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorboard.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorboard.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    /// Size of the dimension.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// Which plugin owns the value, and its plugin-specific content.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorboard.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// Plugin name, e.g. `"text"` or `"hparams"`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Serialized plugin-specific message.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData`: the content of an hparams summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// Schema version; TensorBoard reads version 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Which hparams record this is.
    #[prost(oneof = "h_params_plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<h_params_plugin_data::Data>,
}

/// Nested types of [`HParamsPluginData`].
pub mod h_params_plugin_data {
    /// `HParamsPluginData.data`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// The experiment: hparam and metric declarations.
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        /// A session (run) started with these hparam values.
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        /// A session ended.
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Experiment {
    /// Experiment name.
    #[prost(string, tag = "6")]
    pub name: String,
    /// Markdown description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Owner.
    #[prost(string, tag = "2")]
    pub user: String,
    /// Seconds since the UNIX epoch.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// Declared hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// Declared metrics.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.DataType` values.
pub mod hparam_data_type {
    /// `DATA_TYPE_STRING`.
    pub const STRING: i32 = 1;
    /// `DATA_TYPE_BOOL`.
    pub const BOOL: i32 = 2;
    /// `DATA_TYPE_FLOAT64`.
    pub const FLOAT64: i32 = 3;
}

/// `tensorboard.hparams.HParamInfo` (no domain: the whole domain of the type).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// Hyperparameter name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Display name (empty: the name).
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Markdown description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// `DataType` enum, see [`hparam_data_type`].
    #[prost(int32, tag = "4")]
    pub r#type: i32,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// Which scalar series the metric is.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    /// Display name (empty: the tag).
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// Markdown description.
    #[prost(string, tag = "4")]
    pub description: String,
    /// `DatasetType` enum (0: unknown).
    #[prost(int32, tag = "5")]
    pub dataset_type: i32,
}

/// `tensorboard.hparams.MetricName`: the scalar `tag` in run `<session><group>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// Sub-run of the session holding the scalar (empty: the session's own run).
    #[prost(string, tag = "1")]
    pub group: String,
    /// Scalar tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// Hyperparameter values of the session.
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, ProtoValue>,
    /// Where checkpoints are.
    #[prost(string, tag = "2")]
    pub model_uri: String,
    /// A page monitoring the session.
    #[prost(string, tag = "3")]
    pub monitor_url: String,
    /// Session group (empty: the session alone).
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// Seconds since the UNIX epoch.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.Status` values.
pub mod session_status {
    /// `STATUS_UNKNOWN`.
    pub const UNKNOWN: i32 = 0;
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: i32 = 1;
    /// `STATUS_FAILURE`.
    pub const FAILURE: i32 = 2;
    /// `STATUS_RUNNING`.
    pub const RUNNING: i32 = 3;
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// `Status` enum, see [`session_status`].
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Seconds since the UNIX epoch.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `google.protobuf.Value` (subset: number, string, bool).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    /// The value.
    #[prost(oneof = "proto_value::Kind", tags = "2, 3, 4")]
    pub kind: Option<proto_value::Kind>,
}

/// Nested types of [`ProtoValue`].
pub mod proto_value {
    /// `google.protobuf.Value.kind` (subset).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// `number_value`.
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// `string_value`.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// `bool_value`.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
    }
}
