//! One logged step of a run: a line of its `metrics.jsonl`, `{"step": 120, "train/loss": 3.41,
//! ...}`, one JSON object per step with the step and the scalars by tag.

use std::collections::BTreeMap;

/// One logged step: named scalars (`train/loss`, `moe/layer_03/dropped_fraction`, ...) and
/// histograms (`moe/layer_03/expert_load`). The histograms go to TensorBoard only, not into the
/// JSON line, so a record read back has none.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MetricsRecord {
    /// Optimizer step.
    pub step: u64,
    /// Scalars by tag.
    pub scalars: BTreeMap<String, f64>,
    /// Histograms by tag.
    pub histograms: BTreeMap<String, Vec<f64>>,
}

impl MetricsRecord {
    /// An empty record of `step`.
    pub fn at(step: u64) -> Self {
        Self {
            step,
            ..Self::default()
        }
    }

    /// Adds a scalar.
    pub fn scalar(&mut self, tag: &str, value: f64) -> &mut Self {
        self.scalars.insert(tag.to_string(), value);
        self
    }

    /// The scalar `tag`, if logged and finite.
    pub fn get(&self, tag: &str) -> Option<f64> {
        self.scalars.get(tag).copied().filter(|v| v.is_finite())
    }

    /// The JSON line (without its newline); a non-finite scalar is written as `null`.
    pub fn to_json_line(&self) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), self.step.into());
        for (tag, v) in &self.scalars {
            let number = serde_json::Number::from_f64(*v);
            obj.insert(
                tag.clone(),
                number.map_or(serde_json::Value::Null, Into::into),
            );
        }
        serde_json::Value::Object(obj).to_string()
    }

    /// Reads one line; `None` unless it is a JSON object with an integer `step`. Values that are
    /// not numbers (`null` for a non-finite scalar) are left out.
    pub fn from_json_line(line: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let obj = v.as_object()?;
        let step = obj.get("step")?.as_u64()?;
        let scalars = obj
            .iter()
            .filter(|(k, _)| *k != "step")
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        Some(Self {
            step,
            scalars,
            histograms: BTreeMap::new(),
        })
    }

    /// Reads a whole `metrics.jsonl`: the records, and the (1-based) numbers of the lines that
    /// are not records. Blank lines are skipped.
    pub fn read_jsonl(text: &str) -> (Vec<Self>, Vec<usize>) {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Self::from_json_line(line) {
                Some(r) => records.push(r),
                None => bad.push(i + 1),
            }
        }
        (records, bad)
    }
}
