//! `scalelab params CONFIG [--json]`.

use std::path::PathBuf;

use anyhow::Result;
use scalelab_config::{ModelConfig, ParamCount};
use serde::Serialize;

/// Arguments of `scalelab params`.
#[derive(clap::Args)]
pub struct Args {
    /// A model config (YAML), e.g. configs/minimax-text-01.yaml.
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    name: &'a str,
    config: String,
    #[serde(flatten)]
    params: ParamCount,
}

/// Prints the parameter breakdown of one config.
pub fn run(args: &Args) -> Result<()> {
    let cfg = super::model_config(&args.config)?;
    let p = cfg.param_count();
    if args.json {
        let report = Report {
            name: &cfg.name,
            config: args.config.display().to_string(),
            params: p,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&cfg, &p, &args.config.display().to_string()));
    }
    Ok(())
}

fn table(cfg: &ModelConfig, p: &ParamCount, origin: &str) -> String {
    let m = &p.per_module;
    let (experts, top_k, shared) = cfg
        .ffn
        .moe
        .as_ref()
        .map_or((0, 0, 0), |m| (m.experts, m.top_k, m.shared_experts));
    let dense_layers = cfg.layers - p.moe_layers;
    let rows: Vec<(&str, usize, u64, u64)> = vec![
        ("embedding", 1, p.embedding, p.embedding),
        ("output head", usize::from(p.head > 0), p.head, p.head),
        (
            "lightning attention",
            p.lightning_layers,
            p.lightning_attention,
            m.lightning_attention,
        ),
        (
            "softmax attention",
            p.softmax_layers,
            p.softmax_attention,
            m.softmax_attention,
        ),
        ("dense FFN", dense_layers, p.dense_ffn, m.dense_ffn),
        (
            "routed experts",
            p.moe_layers * experts,
            p.experts,
            m.expert,
        ),
        (
            "shared experts",
            p.moe_layers * shared,
            p.shared_experts,
            m.expert,
        ),
        ("routers", p.moe_layers, p.routers, m.router),
        ("norms", 2 * cfg.layers + 1, p.norms, m.norm),
    ];
    let mut out = format!(
        "{} ({origin}): {} layers, d={}, {} lightning + {} softmax, {} MoE layers{}\n\n",
        if cfg.name.is_empty() {
            "model"
        } else {
            &cfg.name
        },
        cfg.layers,
        cfg.hidden_size,
        p.lightning_layers,
        p.softmax_layers,
        p.moe_layers,
        if experts > 0 {
            format!(" ({experts} experts, top-{top_k})")
        } else {
            String::new()
        },
    );
    out += &format!(
        "{:<36} {:>6} {:>20} {:>16}\n",
        "component", "count", "parameters", "each"
    );
    for (name, count, total, each) in rows {
        if count == 0 {
            continue;
        }
        out += &format!(
            "{name:<36} {count:>6} {:>20} {:>16}\n",
            group(total),
            group(each)
        );
    }
    out += &format!(
        "{:<36} {:>6} {:>20} {:>16}\n",
        "total",
        "",
        group(p.total),
        billions(p.total)
    );
    out += &format!(
        "{:<36} {:>6} {:>20} {:>16}\n",
        "activated (excl. embedding and head)",
        "",
        group(p.activated),
        billions(p.activated)
    );
    out += &format!(
        "{:<36} {:>6} {:>20} {:>16}\n",
        "non-embedding (Kaplan's N)",
        "",
        group(p.non_embedding()),
        billions(p.non_embedding())
    );
    out
}

/// `1234567` -> `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A human-scale size: `456.09B`, `125.3M`, `980.2K`.
fn billions(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else {
        format!("{:.1}K", x / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits_in_threes() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(456_089_655_296), "456,089,655,296");
    }
}
