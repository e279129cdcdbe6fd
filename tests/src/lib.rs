//! Cross-crate integration tests of scalelab live in `tests/tests/`; this library holds what the
//! crates' own tests share: the repository's paths, its YAML files, and the check that every
//! file of a folder of bad inputs is refused with the error its first line names.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Every `.yaml` file under `dir`, folders included, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Feeds every file of `dir` (each starting with `# expect: <text>`) to `load`, which must refuse
/// it with an error whose first line holds that text and, where `names_path`, the file's path
/// (later lines may quote the file, the expect line too, so only the first one counts). Returns
/// how many files were checked.
pub fn each_bad_file_is_refused(
    dir: &Path,
    names_path: bool,
    load: impl Fn(&Path) -> Result<(), String>,
) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` line", path.display()));
        let err = match load(path) {
            Ok(()) => panic!("{} should be refused", path.display()),
            Err(e) => e,
        };
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(expect),
            "{}:\n  expected {expect:?}\n  got      {first:?}",
            path.display()
        );
        if names_path {
            let shown = path.display().to_string();
            assert!(
                first.contains(&shown),
                "error does not name {shown}: {first}"
            );
        }
    }
    files.len()
}
