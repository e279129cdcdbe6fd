//! `cargo run -p scalelab-report --example report -- SWEEP_DIR [OUT_DIR]`: the report of a sweep
//! directory, before the `scalelab report` command exists.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sweep) = args.first() else {
        eprintln!("usage: report SWEEP_DIR [OUT_DIR]");
        std::process::exit(2);
    };
    let out = args.get(1).map(std::path::Path::new);
    match scalelab_report::write_report(std::path::Path::new(sweep), out) {
        Ok(paths) => print!("{}", paths.to_text()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
