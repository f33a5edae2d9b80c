//! The report both benchmark programs make: each measurement next to its naive baseline from
//! the same run, as rows printed in a table and written as JSON for `dev/bench` to merge.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub unit: &'static str,
    pub value: f64,
    pub baseline: f64,
    /// How the baseline was measured.
    pub baseline_how: String,
    pub better: Better,
    pub target: Option<f64>,
    pub notes: String,
}

impl Row {
    /// How many times better than the baseline, whichever direction is better.
    pub fn gain(&self) -> f64 {
        match self.better {
            Better::Higher => self.value / self.baseline,
            Better::Lower => self.baseline / self.value,
        }
    }

    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| match self.better {
            Better::Higher => self.value >= t,
            Better::Lower => self.value <= t,
        })
    }

    pub fn target_text(&self) -> String {
        match (self.target, self.better) {
            (None, _) => "—".into(),
            (Some(t), Better::Higher) => format!("≥ {}", number(t)),
            (Some(t), Better::Lower) => format!("≤ {}", number(t)),
        }
    }
}

/// Two decimals below 10, one below 100, thousands separators above.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// Cores, memory and CPU model of this machine.
pub fn host() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown".into(), |v| {
            v.trim_start_matches([' ', '\t', ':']).to_owned()
        });
    vec![
        ("cores (nproc)".into(), cores.to_string()),
        ("memory".into(), memory),
        ("cpu".into(), cpu),
    ]
}

/// The workspace's target directory (or `CARGO_TARGET_DIR`), where reports are written.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Writes `target/bench-<bench>.json`: the machine, the rows, how long it took, and `extra`
/// (an object of bench-specific fields). Returns the path.
pub fn write_json(
    bench: &str,
    machine: &[(String, String)],
    rows: &[Row],
    extra: serde_json::Value,
    took: Duration,
) -> anyhow::Result<PathBuf> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "measurement": r.what,
                "unit": r.unit,
                "value": r.value,
                "baseline": r.baseline,
                "baseline_method": r.baseline_how,
                "better": if r.better == Better::Higher { "higher" } else { "lower" },
                "gain": r.gain(),
                "target": r.target,
                "target_met": r.met(),
                "notes": r.notes,
            })
        })
        .collect();
    let machine: serde_json::Map<String, serde_json::Value> = machine
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let mut doc = serde_json::json!({
        "bench": bench,
        "seconds": took.as_secs_f64(),
        "machine": machine,
        "rows": rows,
    });
    if let (Some(doc), serde_json::Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    let path = target_dir().join(format!("bench-{bench}.json"));
    std::fs::create_dir_all(target_dir())?;
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The rows as a markdown table: result, baseline (with how it was measured), gain, target.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | result | naive baseline (same run) | gain | target | met |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in rows {
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "—",
        };
        // A baseline that was not measured (NaN) says why in its place.
        let (baseline, gain) = if row.baseline.is_nan() {
            (format!("— ({})", row.baseline_how), "—".to_owned())
        } else {
            (
                format!(
                    "{} {} ({})",
                    number(row.baseline),
                    row.unit,
                    row.baseline_how
                ),
                format!("{:.0}×", row.gain()),
            )
        };
        out.push_str(&format!(
            "| {} | {} {} | {baseline} | {gain} | {} {} | {met} |\n",
            row.what,
            number(row.value),
            row.unit,
            row.target_text(),
            row.unit,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(4.0), "4.00");
        assert_eq!(number(17.24), "17.2");
        assert_eq!(number(63_717.4), "63,717");
        assert_eq!(number(-1_234_567.0), "-1,234,567");
    }

    #[test]
    fn gain_and_target_follow_the_better_direction() {
        let row = Row {
            what: "x".into(),
            unit: "MB",
            value: 40.0,
            baseline: 60.0,
            baseline_how: String::new(),
            better: Better::Lower,
            target: Some(64.0),
            notes: String::new(),
        };
        assert_eq!(row.gain(), 1.5);
        assert_eq!(row.met(), Some(true));
        assert_eq!(row.target_text(), "≤ 64.0");
    }
}
