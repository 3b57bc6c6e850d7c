//! `bench-report [--out FILE]`: gathers the summary lines (`headlines`) of
//! every figures file the benchmarks wrote to
//! `$CARGO_TARGET_DIR/stepup-bench/` into one Markdown table, with the
//! date and the machine, and says which targets are met. `scripts/bench`
//! runs it last.
//!
//! After several runs of the suite (`scripts/bench --runs N` keeps each in
//! `stepup-bench/run-K/`), each figure is the median of the runs' medians,
//! its spread the lowest and highest of them, and a target is met when the
//! median meets it.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use stepup_benchkit::headline::{Target, with_unit};
use stepup_benchkit::output_path;

/// The figures files, in the order of the report, and what made them.
const BENCHES: [(&str, &str); 7] = [
    ("guard.json", "cargo bench -p stepup-guard --bench guard"),
    ("risk.json", "cargo bench -p stepup-core --bench risk"),
    ("http.json", "cargo bench -p stepup-guard --bench http"),
    ("gateway.json", "cargo bench -p stepup-gateway --bench proxy"),
    ("token.json", "cargo bench -p stepup-server --bench token"),
    (
        "token-tmpfs.json",
        "STEPUP_BENCH_DB_DIR=/dev/shm cargo bench -p stepup-server --bench token",
    ),
    ("memory.json", "cargo bench -p stepup --bench memory"),
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out = output_path("report.md");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--out", Some(path)) => out = PathBuf::from(path),
            _ => {
                eprintln!("usage: bench-report [--out FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let report = report();
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&out, &report) {
        eprintln!("cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    print!("{report}");
    eprintln!("written to {}", out.display());
    ExitCode::SUCCESS
}

/// The directories of the runs: `run-1`, `run-2`, ... when the suite ran
/// several times, else the figures directory itself.
fn run_dirs() -> Vec<PathBuf> {
    let base = output_path("");
    let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let k: u32 = name.strip_prefix("run-")?.parse().ok()?;
            Some((k, entry.path()))
        })
        .collect();
    runs.sort();
    if runs.is_empty() {
        vec![base]
    } else {
        runs.into_iter().map(|(_, path)| path).collect()
    }
}

/// One figure over the runs.
struct Row {
    figure: String,
    unit: String,
    /// Each run's median.
    values: Vec<f64>,
    /// The spread of a single run (quartiles of its rounds).
    rounds_spread: Option<(f64, f64)>,
    target_text: Option<String>,
    bound: Option<Target>,
    /// The file's own verdict (files without a `bound`).
    met_in_file: Option<bool>,
}

fn report() -> String {
    let runs = run_dirs();
    let several = runs.len() > 1;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Run on {} ({}){}.\n",
        today(),
        machine(),
        if several {
            format!("; {} runs of the suite", runs.len())
        } else {
            String::new()
        }
    );
    let spread_header = if several {
        format!("lowest – highest of the {} runs", runs.len())
    } else {
        "spread (quartiles of the rounds)".to_owned()
    };
    let _ = writeln!(text, "| figure | median | {spread_header} | target | met |");
    text.push_str("|---|---|---|---|---|\n");
    let (mut met, mut missed, mut missing) = (0, Vec::new(), Vec::new());
    for (file, command) in BENCHES {
        let mut rows: Vec<Row> = Vec::new();
        for dir in &runs {
            let figures = std::fs::read(dir.join(file))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            for h in figures
                .as_ref()
                .and_then(|f| f["headlines"].as_array())
                .into_iter()
                .flatten()
            {
                let figure = h["figure"].as_str().unwrap_or("?");
                let value = h["value"].as_f64().unwrap_or(f64::NAN);
                match rows.iter_mut().find(|r| r.figure == figure) {
                    Some(row) => {
                        row.values.push(value);
                        row.bound = row.bound.or(Target::from_json(&h["bound"]));
                    }
                    None => rows.push(Row {
                        figure: figure.to_owned(),
                        unit: h["unit"].as_str().unwrap_or("").to_owned(),
                        values: vec![value],
                        rounds_spread: match h["spread"].as_array().map(|s| s.as_slice()) {
                            Some([low, high]) => low.as_f64().zip(high.as_f64()),
                            _ => None,
                        },
                        target_text: h["target"].as_str().map(str::to_owned),
                        bound: Target::from_json(&h["bound"]),
                        met_in_file: h["met"].as_bool(),
                    }),
                }
            }
        }
        if rows.is_empty() {
            missing.push(format!("`{command}` (no summary lines in {file})"));
            continue;
        }
        for row in rows {
            let unit = row.unit.as_str();
            let value = stepup_benchkit::median(&row.values);
            let spread = if several {
                let low = row.values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = row.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let of = if row.values.len() < runs.len() {
                    format!(" ({} of {} runs)", row.values.len(), runs.len())
                } else {
                    String::new()
                };
                format!("{} – {}{of}", with_unit(low, unit), with_unit(high, unit))
            } else {
                row.rounds_spread.map_or_else(
                    || "—".to_owned(),
                    |(low, high)| format!("{} – {}", with_unit(low, unit), with_unit(high, unit)),
                )
            };
            let judged = match row.bound {
                Some(bound) => Some(bound.met_by(value)),
                None if !several => row.met_in_file,
                None => None,
            };
            let verdict = match judged {
                Some(true) => {
                    met += 1;
                    "yes"
                }
                Some(false) => {
                    missed.push(row.figure.clone());
                    "**no**"
                }
                None => "",
            };
            let _ = writeln!(
                text,
                "| {} | {} | {spread} | {} | {verdict} |",
                row.figure,
                with_unit(value, unit),
                row.target_text.as_deref().unwrap_or("—"),
            );
        }
    }
    let _ = writeln!(
        text,
        "\n{met} targets met, {} missed{}.",
        missed.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(": {}", missed.join("; "))
        }
    );
    if !missing.is_empty() {
        let _ = writeln!(
            text,
            "\nNot in this report (not run, or failed): {}.",
            missing.join(", ")
        );
    }
    text
}

/// Today (UTC) as `YYYY-MM-DD`.
fn today() -> String {
    stepup_core::Clock::now(&stepup_core::SystemClock).date()
}

/// CPU model, cores, memory and kernel, from `/proc`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(
            || "? GiB".to_owned(),
            |kib| format!("{:.0} GiB", kib / 1_048_576.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {memory_gib}, Linux {kernel}")
}
