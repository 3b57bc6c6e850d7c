//! `bench-report [--out FILE]`: gathers the summary lines (`headlines`) of
//! every figures file the benchmarks wrote to
//! `$CARGO_TARGET_DIR/stepup-bench/` into one Markdown table, with the
//! date and the machine, and says which targets are met. `scripts/bench`
//! runs it last.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use stepup_benchkit::headline::with_unit;
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

fn report() -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Run on {} ({}).\n", today(), machine());
    text.push_str("| figure | median | spread (quartiles of the rounds) | target | met |\n");
    text.push_str("|---|---|---|---|---|\n");
    let (mut met, mut missed, mut missing) = (0, Vec::new(), Vec::new());
    for (file, command) in BENCHES {
        let path = output_path(file);
        let Some(figures) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        else {
            missing.push(format!("`{command}` (no {file})"));
            continue;
        };
        let Some(headlines) = figures["headlines"].as_array() else {
            missing.push(format!("`{command}` ({file} has no summary lines)"));
            continue;
        };
        for h in headlines {
            let unit = h["unit"].as_str().unwrap_or("");
            let value = h["value"].as_f64().unwrap_or(f64::NAN);
            let spread = match h["spread"].as_array().map(|s| s.as_slice()) {
                Some([low, high]) => format!(
                    "{} – {}",
                    with_unit(low.as_f64().unwrap_or(f64::NAN), unit),
                    with_unit(high.as_f64().unwrap_or(f64::NAN), unit)
                ),
                _ => "—".to_owned(),
            };
            let figure = h["figure"].as_str().unwrap_or("?");
            let verdict = match h["met"].as_bool() {
                Some(true) => {
                    met += 1;
                    "yes"
                }
                Some(false) => {
                    missed.push(figure.to_owned());
                    "**no**"
                }
                None => "",
            };
            let _ = writeln!(
                text,
                "| {figure} | {} | {spread} | {} | {verdict} |",
                with_unit(value, unit),
                h["target"].as_str().unwrap_or("—"),
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
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    civil(days)
}

/// The date `days` after 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
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

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::civil(0), "1970-01-01");
        assert_eq!(super::civil(11_016), "2000-02-29");
        assert_eq!(super::civil(20_000), "2024-10-04");
    }
}
