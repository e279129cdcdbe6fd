//! The sweep file: a base run, axes over config paths, budgets and seeds, expanded into runs;
//! or an IsoFLOP plan spec (`plan:`), whose runs `scalelab_scaling::plan` resolves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scalelab_config::{FieldError, ModelConfig};
use scalelab_data::DataConfig;
use scalelab_train::{Budget, RunConfig, TrainSettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SweepError;

/// A sweep file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Name of the sweep (directory names, tables).
    pub name: String,
    /// What the sweep compares, for the report: attention-scaling, hybrid-ratio, moe-vs-dense,
    /// expert-granularity, norm, or anything else.
    #[serde(default)]
    pub kind: String,
    /// The base model config, relative to the sweep file (not with `plan`).
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// An IsoFLOP plan spec, relative to the sweep file: its runs (models, sizes, budgets) are
    /// the sweep's, trained with this file's `train`, `data`, `overrides` and `seeds`. A plan
    /// spec given to `scalelab sweep` directly is read as a sweep of this one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PathBuf>,
    /// Values set on the base before the axes, by dotted path (`attention.heads: 8`,
    /// `train.lr: 1e-3`).
    #[serde(default)]
    pub overrides: BTreeMap<String, Value>,
    /// Training settings shared by every run (the budget may come from `budgets`).
    #[serde(default)]
    pub train: TrainSettings,
    /// The data every run trains on.
    #[serde(default)]
    pub data: DataConfig,
    /// What varies.
    #[serde(default)]
    pub axes: Axes,
    /// Architecture label of each run: a template over axis values such as `"{attention.pattern}"`
    /// mapped through `label_map`, or a fixed label. Defaults to the base model's name.
    #[serde(default)]
    pub label: Option<String>,
    /// Maps label text to a display label (e.g. `S: softmax`).
    #[serde(default)]
    pub label_map: BTreeMap<String, String>,
    /// Compute budgets in FLOPs: each run trains for `budget / FLOPs per token` tokens (IsoFLOP).
    /// Without budgets, each run uses `train.budget`.
    #[serde(default)]
    pub budgets: Vec<f64>,
    /// Seeds; each run is repeated per seed.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// The axes of a sweep: a cartesian `grid` of paths, and `zip` paths varied together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    /// Every combination of these values.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// These lists, all the same length, advance together (model sizes: width with depth).
    #[serde(default)]
    pub zip: BTreeMap<String, Vec<Value>>,
}

/// One planned run.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Directory name, from the axis values.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// The axis values of this run, by path.
    pub axes: BTreeMap<String, Value>,
    /// The budget in FLOPs, when the sweep has budgets.
    pub budget: Option<f64>,
    /// Everything the trainer needs.
    pub config: RunConfig,
}

impl SweepSpec {
    /// Reads a sweep file, or an IsoFLOP plan spec (a file with `architectures:` or
    /// `moe_vs_dense:`) as the sweep of that plan with default training settings.
    pub fn from_yaml_file(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::io(path, e))?;
        let spec_err = |message: String| SweepError::Spec {
            path: path.to_path_buf(),
            message,
        };
        let doc: Value = serde_saphyr::from_str(&text)
            .map_err(|e| spec_err(scalelab_config::yaml_message(e)))?;
        let is_plan = ["architectures", "moe_vs_dense"]
            .iter()
            .any(|k| doc.get(k).is_some());
        if !is_plan {
            return serde_saphyr::from_str(&text)
                .map_err(|e| spec_err(scalelab_config::yaml_message(e)));
        }
        let name = doc.get("name").and_then(Value::as_str).unwrap_or("plan");
        let file = path.file_name().map_or(path.to_path_buf(), PathBuf::from);
        Ok(Self {
            name: name.to_string(),
            kind: String::new(),
            base: None,
            plan: Some(file),
            overrides: BTreeMap::new(),
            train: TrainSettings::default(),
            data: DataConfig::default(),
            axes: Axes::default(),
            label: None,
            label_map: BTreeMap::new(),
            budgets: Vec::new(),
            seeds: default_seeds(),
        })
    }

    /// Expands the sweep into runs, validating every one before anything trains: an unknown
    /// path, a value of the wrong type, or an axis value that makes an invalid model is an
    /// error naming the run, the path and the rule.
    pub fn plan(&self, spec_path: &Path) -> Result<Vec<PlannedRun>, SweepError> {
        let dir = spec_path.parent().unwrap_or(Path::new("."));
        if let Some(plan) = &self.plan {
            return self.plan_isoflop(&dir.join(plan));
        }
        let Some(base) = &self.base else {
            return Err(SweepError::Invalid(FieldError::new(
                "base",
                "(missing)",
                "name the base model config (e.g. base: ../configs/tiny/tiny-hybrid.yaml), or \
                 an IsoFLOP plan spec with plan:",
            )));
        };
        let base_path = dir.join(base);
        let base = ModelConfig::from_yaml_file(&base_path).map_err(|e| SweepError::Run {
            run: "(base)".into(),
            path: "base".into(),
            message: e.to_string(),
        })?;
        let lens: Vec<(String, usize)> = self
            .axes
            .zip
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        if let Some((first, n)) = lens.first() {
            if let Some((other, m)) = lens.iter().find(|(_, m)| m != n) {
                return Err(SweepError::Invalid(FieldError::new(
                    format!("axes.zip.{other}"),
                    format!("{m} values"),
                    format!("zip axes advance together: {first} has {n} values, so every zip axis needs {n}"),
                )));
            }
        }
        for (path, values) in self.axes.grid.iter().chain(&self.axes.zip) {
            if values.is_empty() {
                return Err(SweepError::Invalid(FieldError::new(
                    format!("axes.{path}"),
                    "[]",
                    "an axis needs at least one value",
                )));
            }
        }
        self.check_seeds()?;
        if let Some(b) = self.budgets.iter().find(|b| b.is_nan() || **b <= 0.0) {
            return Err(SweepError::Invalid(FieldError::new(
                "budgets",
                b.to_string(),
                "budgets are positive FLOP counts, e.g. 1e13",
            )));
        }

        let mut points: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
        for (path, values) in &self.axes.grid {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.insert(path.clone(), v.clone());
                        q
                    })
                })
                .collect();
        }
        let zip_len = lens.first().map_or(1, |(_, n)| *n);
        let mut runs = Vec::new();
        for point in &points {
            for i in 0..zip_len {
                let mut axes = point.clone();
                for (path, values) in &self.axes.zip {
                    axes.insert(path.clone(), values[i].clone());
                }
                let budgets: Vec<Option<f64>> = if self.budgets.is_empty() {
                    vec![None]
                } else {
                    self.budgets.iter().map(|b| Some(*b)).collect()
                };
                for budget in budgets {
                    for &seed in &self.seeds {
                        runs.push(self.make_run(&base, &axes, budget, seed)?);
                    }
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &runs {
            if !seen.insert(r.name.clone()) {
                return Err(SweepError::Invalid(FieldError::new(
                    "axes",
                    r.name.clone(),
                    "two runs got the same name: an axis repeats a value",
                )));
            }
        }
        Ok(runs)
    }

    /// Every sweep trains at least one seed.
    fn check_seeds(&self) -> Result<(), SweepError> {
        if self.seeds.is_empty() {
            return Err(SweepError::Invalid(FieldError::new(
                "seeds",
                "[]",
                "give at least one seed",
            )));
        }
        Ok(())
    }

    /// The runs of the IsoFLOP plan spec at `path`, each trained for its budget with this
    /// sweep's settings; the plan's sequence length and FLOP convention are the runs'.
    fn plan_isoflop(&self, path: &Path) -> Result<Vec<PlannedRun>, SweepError> {
        let misplaced = [
            ("base", self.base.is_some()),
            (
                "axes",
                !self.axes.grid.is_empty() || !self.axes.zip.is_empty(),
            ),
            ("budgets", !self.budgets.is_empty()),
            ("label", self.label.is_some()),
        ];
        if let Some((field, _)) = misplaced.iter().find(|(_, set)| *set) {
            return Err(SweepError::Invalid(FieldError::new(
                *field,
                "(set)",
                "a sweep with `plan:` takes its models, sizes and budgets from the plan spec: \
                 remove it, or drop `plan:`",
            )));
        }
        self.check_seeds()?;
        let plan = scalelab_scaling::plan::plan_from_file(path)?;
        let default_len = TrainSettings::default().seq_len;
        if self.train.seq_len != plan.seq_len && self.train.seq_len != default_len {
            return Err(SweepError::Invalid(FieldError::new(
                "train.seq_len",
                self.train.seq_len,
                format!(
                    "the plan spec {} fixes seq_len = {} (its FLOP counts use it): remove \
                     train.seq_len or make the two equal",
                    path.display(),
                    plan.seq_len
                ),
            )));
        }
        let mut runs = Vec::new();
        for p in &plan.runs {
            let axes = BTreeMap::from([("size".to_string(), Value::String(p.size.clone()))]);
            for &seed in &self.seeds {
                let mut name = p.name.clone();
                if self.seeds.len() > 1 {
                    name.push_str(&format!("_seed{seed}"));
                }
                let no_axes = BTreeMap::new();
                let mut run =
                    self.build_run(name, &p.config, &no_axes, Some(p.budget), seed, |train| {
                        train.seq_len = plan.seq_len;
                        train.flop_convention = plan.convention;
                    })?;
                run.arch = p.arch.clone();
                run.axes = axes.clone();
                runs.push(run);
            }
        }
        Ok(runs)
    }

    fn make_run(
        &self,
        base: &ModelConfig,
        axes: &BTreeMap<String, Value>,
        budget: Option<f64>,
        seed: u64,
    ) -> Result<PlannedRun, SweepError> {
        let mut name = run_name(axes, budget, seed, self.seeds.len() > 1);
        if name.is_empty() {
            name = "run".into();
        }
        let mut run = self.build_run(name, base, axes, budget, seed, |_| {})?;
        run.arch = self.arch_label(axes, base);
        Ok(run)
    }

    /// One run: `base` with the overrides and `axes` set, this sweep's training settings (then
    /// `adjust`), `seed`, and `budget` (FLOPs) when given; validated before anything trains.
    fn build_run(
        &self,
        name: String,
        base: &ModelConfig,
        axes: &BTreeMap<String, Value>,
        budget: Option<f64>,
        seed: u64,
        adjust: impl FnOnce(&mut TrainSettings),
    ) -> Result<PlannedRun, SweepError> {
        let err = |path: &str, message: String| SweepError::Run {
            run: name.clone(),
            path: path.into(),
            message,
        };
        let mut doc = serde_json::json!({
            "model": serde_json::to_value(base).expect("config serializes"),
            "train": serde_json::to_value(&self.train).expect("settings serialize"),
            "data": serde_json::to_value(&self.data).expect("data config serializes"),
        });
        for (path, value) in self.overrides.iter().chain(axes) {
            set_path(&mut doc, &qualified(path), value.clone()).map_err(|m| err(path, m))?;
        }
        let model: ModelConfig = serde_json::from_value(doc["model"].take())
            .map_err(|e| err(&first_model_path(axes, &self.overrides), e.to_string()))?;
        model
            .validate()
            .map_err(|e| err(&first_model_path(axes, &self.overrides), e.to_string()))?;
        let mut train: TrainSettings =
            serde_json::from_value(doc["train"].take()).map_err(|e| err("train", e.to_string()))?;
        let data: DataConfig =
            serde_json::from_value(doc["data"].take()).map_err(|e| err("data", e.to_string()))?;
        adjust(&mut train);
        train.seed = seed;
        if let Some(flops) = budget {
            train.budget = Budget {
                steps: None,
                tokens: None,
                flops: Some(flops),
            };
        }
        let mut model = model;
        model.name = name.clone();
        let config = RunConfig { model, train, data };
        config.validate().map_err(|e| err("train", e.to_string()))?;
        config
            .total_steps()
            .map_err(|e| err("train.budget", e.to_string()))?;
        Ok(PlannedRun {
            name,
            arch: String::new(),
            axes: axes.clone(),
            budget,
            config,
        })
    }

    fn arch_label(&self, axes: &BTreeMap<String, Value>, base: &ModelConfig) -> String {
        let Some(template) = &self.label else {
            return if base.name.is_empty() {
                "model".into()
            } else {
                base.name.clone()
            };
        };
        let mut label = template.clone();
        for (path, value) in axes {
            label = label.replace(&format!("{{{path}}}"), &value_text(value));
        }
        self.label_map.get(&label).cloned().unwrap_or(label)
    }
}

/// `attention.pattern` -> `model.attention.pattern`; `train.*` and `data.*` stay.
fn qualified(path: &str) -> String {
    if path.starts_with("train.") || path.starts_with("data.") || path.starts_with("model.") {
        path.to_string()
    } else {
        format!("model.{path}")
    }
}

fn first_model_path(axes: &BTreeMap<String, Value>, overrides: &BTreeMap<String, Value>) -> String {
    let paths: Vec<&String> = overrides
        .keys()
        .chain(axes.keys())
        .filter(|p| qualified(p).starts_with("model."))
        .collect();
    if paths.is_empty() {
        "base".into()
    } else {
        paths
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Sets `value` at a dotted path, creating maps for absent optional sections.
fn set_path(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut node = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!("`{path}` has an empty segment"));
        }
        let Value::Object(map) = node else {
            return Err(format!(
                "`{}` is not a section, so `{path}` cannot be set",
                parts[..i].join(".")
            ));
        };
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = map.entry(part.to_string()).or_insert(Value::Null);
        if entry.is_null() {
            *entry = Value::Object(Default::default());
        }
        node = entry;
    }
    Ok(())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `attention.pattern=LLLS hidden_size=64` -> `pattern-LLLS_hidden_size-64`: the last path
/// segment and the value of each axis, plus budget and seed.
fn run_name(
    axes: &BTreeMap<String, Value>,
    budget: Option<f64>,
    seed: u64,
    many_seeds: bool,
) -> String {
    let mut parts: Vec<String> = axes
        .iter()
        .map(|(path, v)| {
            let key = path.rsplit('.').next().unwrap_or(path);
            let text: String = value_text(v)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{key}-{text}")
        })
        .collect();
    if let Some(b) = budget {
        parts.push(format!("C{b:.0e}").replace("e+", "e"));
    }
    if many_seeds {
        parts.push(format!("seed{seed}"));
    }
    parts.join("_")
}
