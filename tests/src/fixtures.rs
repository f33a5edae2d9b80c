//! The recorded scorecard outputs of `../shared/fixtures/scorecard/`.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// Every recorded output, as (file name, the line scorecard printed).
pub fn scorecard_outputs() -> Vec<(String, String)> {
    let dir = dir().join("scorecard");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
        .map(|e| e.expect("readable fixtures dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable fixture");
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                text.trim_end().to_owned(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no scorecard outputs in {}", dir.display());
    out
}
