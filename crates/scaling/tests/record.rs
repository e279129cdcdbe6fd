//! The results table and the metrics lines: what is written reads back equal, in the bytes the
//! sweep has always written, and hand-written tables read as `scalelab fit` documents.

use std::collections::BTreeMap;

use scalelab_scaling::record::{
    is_probe_column, write_records, MetricsRecord, RecordError, ResultsTable, RunRecord,
};

/// A finished MoE run with probe scores and axes, and a failed dense one.
fn records() -> Vec<RunRecord> {
    let finished = RunRecord {
        name: "moe-c1e15".into(),
        arch: "moe".into(),
        params: Some(1_604_055.0),
        activated_params: Some(736_492.0),
        tokens: Some(226_298_000.0),
        flops: Some(9.99999999696e14),
        budget: Some(1e15),
        loss: Some(3.37613),
        train_loss: Some(3.39047),
        val_loss: Some(3.37613),
        entropy_rate: Some(1.5),
        status: Some("ok".into()),
        wall_secs: Some(416.7),
        tokens_per_s: Some(543_115.25),
        softmax_fraction: Some(0.125),
        experts: Some(8.0),
        top_k: Some(2.0),
        expert_width: Some(96.0),
        residual: Some("prenorm".into()),
        probe_chance: Some(0.1),
        probes: BTreeMap::from([
            ("mqar".into(), 0.65625),
            ("niah_ctx256_depth0.5".into(), 1.0),
        ]),
        axes: BTreeMap::from([
            ("budget".into(), "1e15".into()),
            ("model.residual".into(), "prenorm".into()),
        ]),
        run_dir: Some("runs/moe-c1e15".into()),
    };
    let failed = RunRecord {
        name: "dense-c1e15".into(),
        arch: "dense".into(),
        params: Some(867_564.0),
        activated_params: Some(736_492.0),
        budget: Some(1e15),
        status: Some("failed".into()),
        softmax_fraction: Some(1.0),
        experts: Some(0.0),
        top_k: Some(0.0),
        residual: Some("deepnorm".into()),
        axes: BTreeMap::from([("budget".into(), "1e15".into())]),
        run_dir: Some("runs/dense-c1e15".into()),
        ..RunRecord::default()
    };
    vec![finished, failed]
}

#[test]
fn written_records_read_back_equal_in_the_sweeps_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.csv");
    let written = records();
    write_records(&path, &written).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "name,arch,params,activated_params,tokens,flops,budget,loss,train_loss,val_loss,\
         entropy_rate,status,wall_secs,tokens_per_s,softmax_fraction,experts,top_k,expert_width,\
         residual,probe_chance,mqar,niah_ctx256_depth0.5,axis.budget,axis.model.residual,run_dir\n\
         moe-c1e15,moe,1604055,736492,226298000,999999999696000,1000000000000000,3.37613,3.39047,\
         3.37613,1.5,ok,416.7,543115.25,0.125,8,2,96,prenorm,0.1,0.65625,1,1e15,prenorm,\
         runs/moe-c1e15\n\
         dense-c1e15,dense,867564,736492,,,1000000000000000,,,,,failed,,,1,0,0,,deepnorm,,,,1e15,,\
         runs/dense-c1e15\n"
    );
    assert!(!dir.path().join(".results.csv.tmp").exists());
    let table = ResultsTable::read(&path).unwrap();
    let read: Vec<RunRecord> = table.rows.iter().map(|r| r.record.clone()).collect();
    assert_eq!(read, written);
    assert_eq!(
        table.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(table.has_column("Status") && !table.has_column("seed"));
}

#[test]
fn non_finite_numbers_are_written_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.csv");
    let mut r = records().remove(0);
    r.loss = Some(f64::NAN);
    r.probes.insert("niah".into(), f64::INFINITY);
    write_records(&path, &[r.clone()]).unwrap();
    let back = ResultsTable::read(&path).unwrap().rows.remove(0).record;
    assert_eq!(back.loss, None);
    assert!(!back.probes.contains_key("niah"));
}

#[test]
fn hand_written_tables_need_only_the_seven_columns() {
    let text = "# a comment\n\
                NAME, Arch ,params,Activated_Params,tokens,FLOPS,loss,notes\n\
                s-1,softmax,1e8,9e7,1.8e9,1e18,3.1,first try\n\
                # another\n\
                s-2,softmax,2e8,1.8e8,9e9,1e19,2.9,\n";
    let table = ResultsTable::parse(text, "t.csv").unwrap();
    assert_eq!(table.rows.len(), 2);
    let r = &table.rows[1].record;
    assert_eq!((r.name.as_str(), r.arch.as_str()), ("s-2", "softmax"));
    assert_eq!(
        (r.activated_params, r.flops, r.loss),
        (Some(1.8e8), Some(1e19), Some(2.9))
    );
    assert_eq!(
        (r.budget, r.status.as_deref(), r.run_dir.as_deref()),
        (None, None, None)
    );
    assert!(r.probes.is_empty() && r.axes.is_empty());
}

#[test]
fn bad_tables_name_the_file_line_column_and_fix() {
    let head = "name,arch,params,activated_params,tokens,flops,loss";
    let err = |text: &str| ResultsTable::parse(text, "t.csv").unwrap_err();
    let e = err(&format!("{head},mqar\na,s,1,1,1,1,3,high\n"));
    assert!(
        matches!(&e, RecordError::BadNumber { line: 2, column, value, .. }
            if column == "mqar" && value == "high"),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("t.csv: line 2 (run `a`): column `mqar` = \"high\" is not a number"));
    let e = err(&format!("{head},Axis.depth,axis.DEPTH\n"));
    assert!(
        e.to_string().contains("column `axis.depth` appears twice"),
        "{e}"
    );
    let e = err("name,arch,flops\n");
    assert!(
        e.to_string()
            .contains("missing column(s) `params`, `activated_params`, `tokens`, `loss`"),
        "{e}"
    );
    let e = err(&format!("{head}\na,s,1,1,1,1,3\nb,s,1\n"));
    assert!(matches!(e, RecordError::Csv { line: Some(3), .. }), "{e}");
    let e = ResultsTable::read(std::path::Path::new("/no/such/results.csv")).unwrap_err();
    assert!(e
        .to_string()
        .contains("cannot read results file /no/such/results.csv"));
}

#[test]
fn probe_columns_are_the_trainers_names() {
    for c in ["mqar", "NIAH", "mqar_pairs8", "niah_ctx512_depth0.25"] {
        assert!(is_probe_column(c), "{c}");
    }
    for c in ["loss", "mqars", "niahx", "notes"] {
        assert!(!is_probe_column(c), "{c}");
    }
}

#[test]
fn metrics_lines_read_back_equal() {
    let mut r = MetricsRecord::at(120);
    r.scalar("train/loss", 3.41)
        .scalar("train/tokens", 5e7)
        .scalar("perf/mfu", f64::NAN);
    let line = r.to_json_line();
    assert_eq!(
        line,
        r#"{"perf/mfu":null,"step":120,"train/loss":3.41,"train/tokens":50000000.0}"#
    );
    let back = MetricsRecord::from_json_line(&line).unwrap();
    assert_eq!(back.step, 120);
    assert_eq!(back.get("train/loss"), Some(3.41));
    assert_eq!(back.get("perf/mfu"), None);
    let text = format!("{line}\n\nnot json\n[1]\n{{\"step\": -1}}\n{line}\n");
    let (records, bad) = MetricsRecord::read_jsonl(&text);
    assert_eq!(records.len(), 2);
    assert_eq!(bad, [3, 4, 5]);
}
