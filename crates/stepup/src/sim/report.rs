//! The simulation's report: JSON for machines, a self-contained HTML page
//! with plots for people, and a few lines for the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::attacks::Attempt;
use super::{Call, SimArgs, tally};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency figures (milliseconds) with a log-spaced histogram.
fn latency(mut micros: Vec<u64>) -> Value {
    micros.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let bounds_ms = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    ];
    let mut buckets = vec![0u64; bounds_ms.len() + 1];
    for &us in &micros {
        let i = bounds_ms
            .iter()
            .position(|&b| ms(us) <= b)
            .unwrap_or(bounds_ms.len());
        buckets[i] += 1;
    }
    json!({
        "count": micros.len(),
        "p50_ms": ms(percentile(&micros, 0.50)),
        "p95_ms": ms(percentile(&micros, 0.95)),
        "p99_ms": ms(percentile(&micros, 0.99)),
        "max_ms": ms(micros.last().copied().unwrap_or(0)),
        "histogram": {
            "upper_bounds_ms": bounds_ms,
            "counts": buckets,
        },
    })
}

/// The report of a run.
pub(super) fn build(args: &SimArgs, elapsed: Duration, calls: &[Call], attempts: &[Attempt]) -> Value {
    let total = calls.len() as f64;
    // Calls that answered a step-up, and those where it asked the user
    // something (the rest passed on the session: single sign-on).
    let step_up_calls: Vec<&Call> = calls.iter().filter(|c| c.step_ups > 0).collect();
    let interactive: Vec<&Call> = step_up_calls
        .iter()
        .copied()
        .filter(|c| !c.asked.is_empty())
        .collect();
    let per_1000 = |n: usize| {
        if total > 0.0 {
            (n as f64 * 1000.0 / total * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let mut by_trigger = serde_json::Map::new();
    for (action, n) in tally(step_up_calls.iter().map(|c| c.action.as_str())) {
        let asked = interactive.iter().filter(|c| c.action == action).count();
        by_trigger.insert(
            action,
            json!({
                "step_ups_per_1000_calls": per_1000(n as usize),
                "asking_the_user_per_1000_calls": per_1000(asked),
            }),
        );
    }
    let mut by_action = serde_json::Map::new();
    for (action, n) in tally(calls.iter().map(|c| c.action.as_str())) {
        let these: Vec<u64> = calls
            .iter()
            .filter(|c| c.action == action)
            .map(|c| c.micros)
            .collect();
        let ups = calls
            .iter()
            .filter(|c| c.action == action && c.step_ups > 0)
            .count();
        let mut l = latency(these);
        l["calls"] = json!(n);
        l["step_ups"] = json!(ups);
        by_action.insert(action, l);
    }
    let refused: Vec<Value> = calls
        .iter()
        .filter(|c| !c.ok)
        .take(20)
        .map(|c| json!({"action": c.action, "door": c.door, "status": c.status, "error": c.error}))
        .collect();
    let mut kinds = serde_json::Map::new();
    for (kind, n) in tally(attempts.iter().map(|a| a.kind)) {
        let blocked = attempts.iter().filter(|a| a.kind == kind && a.blocked).count();
        kinds.insert(kind, json!({"attempted": n, "blocked": blocked}));
    }
    json!({
        "run": {
            "seed": args.seed,
            "users": args.users,
            "duration_s": args.duration.as_secs_f64(),
            "elapsed_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        },
        "trusted_calls": {
            "total": calls.len(),
            "ok": calls.iter().filter(|c| c.ok).count(),
            "refused": calls.iter().filter(|c| !c.ok).count(),
            "refused_examples": refused,
            "by_door": tally(calls.iter().map(|c| c.door)),
        },
        "friction": {
            "step_ups": step_up_calls.len(),
            "step_ups_per_1000_calls": per_1000(step_up_calls.len()),
            "asking_the_user": interactive.len(),
            "asking_the_user_per_1000_calls": per_1000(interactive.len()),
            "factors_asked": tally(interactive.iter().flat_map(|c| c.asked.iter().map(String::as_str))),
            "by_trigger": by_trigger,
            "code_waits": step_up_calls.iter().filter(|c| c.waited_for_code_ms > 0).count(),
            "first_sign_ins": calls.iter().filter(|c| c.first_sign_in).count(),
        },
        "reauth_latency": latency(step_up_calls.iter().map(|c| c.micros).collect()),
        "reauth_latency_without_code_waits": latency(
            step_up_calls.iter().map(|c| c.micros.saturating_sub(c.waited_for_code_ms * 1000)).collect()
        ),
        "call_latency": latency(calls.iter().filter(|c| c.step_ups == 0 && !c.first_sign_in).map(|c| c.micros).collect()),
        "by_action": by_action,
        "attacks": {
            "attempted": attempts.len(),
            "blocked": attempts.iter().filter(|a| a.blocked).count(),
            "through": attempts.iter().filter(|a| !a.blocked).count(),
            "by_kind": kinds,
            "list": attempts.iter().map(|a| json!({
                "name": a.name, "kind": a.kind, "blocked": a.blocked, "detail": a.detail,
            })).collect::<Vec<_>>(),
        },
    })
}

/// Resident memory over the run: samples `(seconds, MiB)`, the mean after
/// warm-up (second tenth of the samples) and at the end (last tenth), and
/// the growth between them (flat memory: near 0).
pub(super) fn memory(samples: &[(f64, f64)]) -> Value {
    if samples.is_empty() {
        return json!({"samples": 0});
    }
    // After warm-up (the second tenth of the samples) against the last tenth.
    let n = samples.len();
    let mean = |range: std::ops::Range<usize>| {
        let v = &samples[range];
        v.iter().map(|(_, m)| *m).sum::<f64>() / v.len().max(1) as f64
    };
    let early = mean((n / 10).min(n - 1)..(n / 5).max(n / 10 + 1).min(n));
    let late = mean((n * 9 / 10).min(n - 1)..n);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "samples": samples.len(),
        "series_mib": samples.iter().map(|(t, m)| json!([round(*t), round(*m)])).collect::<Vec<_>>(),
        "max_mib": round(samples.iter().map(|(_, m)| *m).fold(0.0, f64::max)),
        "early_mean_mib": round(early),
        "late_mean_mib": round(late),
        "growth_mib": round(late - early),
    })
}

/// A few lines for the terminal.
pub(super) fn summary(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trusted calls: {} ({} refused); step-ups: {} ({} per 1000 calls), {} asking the user ({} per 1000 calls)",
        r["trusted_calls"]["total"],
        r["trusted_calls"]["refused"],
        r["friction"]["step_ups"],
        r["friction"]["step_ups_per_1000_calls"],
        r["friction"]["asking_the_user"],
        r["friction"]["asking_the_user_per_1000_calls"]
    );
    let _ = writeln!(
        out,
        "re-authentication latency: p50 {} ms, p95 {} ms, p99 {} ms ({} without waiting for a fresh code: p50 {} ms)",
        r["reauth_latency"]["p50_ms"],
        r["reauth_latency"]["p95_ms"],
        r["reauth_latency"]["p99_ms"],
        r["friction"]["code_waits"],
        r["reauth_latency_without_code_waits"]["p50_ms"],
    );
    if r["memory"].is_object() {
        let _ = writeln!(
            out,
            "memory (resident, whole deployment): max {} MiB; {} MiB after warm-up, {} MiB at the end ({:+} MiB)",
            r["memory"]["max_mib"],
            r["memory"]["early_mean_mib"],
            r["memory"]["late_mean_mib"],
            r["memory"]["growth_mib"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        out,
        "attacks: {} attempted, {} blocked, {} through",
        r["attacks"]["attempted"], r["attacks"]["blocked"], r["attacks"]["through"]
    );
    for a in r["attacks"]["list"].as_array().into_iter().flatten() {
        if a["blocked"] != true {
            let _ = writeln!(out, "  THROUGH: {} ({}): {}", a["name"], a["kind"], a["detail"]);
        }
    }
    for a in r["attacks"]["not_run"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  not run: {} ({}): {}", a["name"], a["kind"], a["why"]);
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG bar chart of `(label, value)`.
fn bars(title: &str, unit: &str, data: &[(String, f64)]) -> String {
    let width = 640.0;
    let bar_h = 22.0;
    let label_w = 190.0;
    let height = 30.0 + bar_h * data.len() as f64;
    let max = data.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(1e-9);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' aria-label='{}'>",
        escape(title),
        escape(title)
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let y = 10.0 + bar_h * i as f64;
        let w = (width - label_w - 80.0) * value / max;
        let _ = write!(
            svg,
            "<text x='{:.0}' y='{:.0}' text-anchor='end' font-size='12'>{}</text><rect x='{label_w}' y='{:.0}' width='{w:.1}' height='{:.0}' fill='#3b6ea5'/><text x='{:.0}' y='{:.0}' font-size='12'>{} {}</text>",
            label_w - 6.0,
            y + 15.0,
            escape(label),
            y + 3.0,
            bar_h - 6.0,
            label_w + w + 4.0,
            y + 15.0,
            (value * 10.0).round() / 10.0,
            unit
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn histogram(title: &str, l: &Value) -> String {
    let bounds = l["histogram"]["upper_bounds_ms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let counts = l["histogram"]["counts"].as_array().cloned().unwrap_or_default();
    let data: Vec<(String, f64)> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let label = match bounds.get(i) {
                Some(b) => format!("≤ {b} ms"),
                None => "longer".to_owned(),
            };
            (label, c.as_f64().unwrap_or(0.0))
        })
        .collect();
    bars(title, "", &data)
}

/// An SVG line chart of `[x, y]` points, y from 0.
fn line_chart(title: &str, points: &[Value]) -> String {
    let (w, h, pad) = (640.0, 200.0, 40.0);
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
        .collect();
    let max_x = xy.iter().map(|p| p.0).fold(1e-9, f64::max);
    let max_y = xy.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.1;
    let path: Vec<String> = xy
        .iter()
        .map(|(x, y)| {
            format!(
                "{:.1},{:.1}",
                pad + (w - 2.0 * pad) * x / max_x,
                h - pad - (h - 2.0 * pad) * y / max_y
            )
        })
        .collect();
    format!(
        "<figure><figcaption>{t}</figcaption><svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img' aria-label='{t}'>\
         <line x1='{pad}' y1='{b}' x2='{r}' y2='{b}' stroke='#888'/><line x1='{pad}' y1='{pad}' x2='{pad}' y2='{b}' stroke='#888'/>\
         <text x='{pad}' y='{ty}' font-size='11'>0</text><text x='{r}' y='{ty}' font-size='11' text-anchor='end'>{mx:.0} s</text>\
         <text x='4' y='{py}' font-size='11'>{my:.0}</text>\
         <polyline fill='none' stroke='#3b6ea5' stroke-width='2' points='{p}'/></svg></figure>",
        t = escape(title),
        b = h - pad,
        r = w - pad,
        ty = h - pad + 14.0,
        py = pad + 4.0,
        mx = max_x,
        my = max_y,
        p = path.join(" ")
    )
}

/// A self-contained HTML page: no scripts, no external resources.
pub(super) fn html(r: &Value) -> String {
    let mut page = String::from(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>stepup sim report</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;font-size:14px}\
         .ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:4px}</style></head><body>",
    );
    let through = r["attacks"]["through"].as_u64().unwrap_or(0);
    let refused = r["trusted_calls"]["refused"].as_u64().unwrap_or(0);
    let verdict = if through == 0 && refused == 0 {
        "<p class='ok'>No attack got through; no trusted call was refused.</p>".to_owned()
    } else {
        format!("<p class='bad'>{through} attacks got through; {refused} trusted calls were refused.</p>")
    };
    let _ = write!(
        page,
        "<h1>stepup sim</h1><p>{} virtual users for {} s (seed {}).</p>{verdict}",
        r["run"]["users"], r["run"]["duration_s"], r["run"]["seed"]
    );
    let _ = write!(
        page,
        "<h2>Friction</h2><p>{} step-ups in {} trusted calls ({} per 1000 calls); {} of them asked the user for a factor ({} per 1000 calls), the others were met by the session (single sign-on). Factors asked: {}.</p>",
        r["friction"]["step_ups"],
        r["trusted_calls"]["total"],
        r["friction"]["step_ups_per_1000_calls"],
        r["friction"]["asking_the_user"],
        r["friction"]["asking_the_user_per_1000_calls"],
        escape(&r["friction"]["factors_asked"].to_string()),
    );
    let trigger = |key: &str| -> Vec<(String, f64)> {
        r["friction"]["by_trigger"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v[key].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    page.push_str(&bars(
        "Step-ups per 1000 calls, by the action that asked",
        "",
        &trigger("step_ups_per_1000_calls"),
    ));
    page.push_str(&bars(
        "Step-ups that asked the user something, per 1000 calls",
        "",
        &trigger("asking_the_user_per_1000_calls"),
    ));
    let _ = write!(
        page,
        "<h2>Re-authentication latency</h2><p>p50 {} ms, p95 {} ms, p99 {} ms over {} step-ups (the whole call: challenge, sign-in pages, code exchange, retry; no human think time). Without the waits for a code not used yet: p50 {} ms, p99 {} ms.</p>",
        r["reauth_latency"]["p50_ms"],
        r["reauth_latency"]["p95_ms"],
        r["reauth_latency"]["p99_ms"],
        r["reauth_latency"]["count"],
        r["reauth_latency_without_code_waits"]["p50_ms"],
        r["reauth_latency_without_code_waits"]["p99_ms"],
    );
    page.push_str(&histogram(
        "Calls that stepped up, by latency",
        &r["reauth_latency"],
    ));
    let _ = write!(
        page,
        "<h2>Trusted calls</h2><p>p50 {} ms, p99 {} ms over {} calls without a step-up.</p>",
        r["call_latency"]["p50_ms"], r["call_latency"]["p99_ms"], r["call_latency"]["count"]
    );
    page.push_str(&histogram(
        "Calls without a step-up, by latency",
        &r["call_latency"],
    ));
    if let Some(series) = r["memory"]["series_mib"].as_array().filter(|s| !s.is_empty()) {
        let _ = write!(
            page,
            "<h2>Memory</h2><p>Resident set of the whole deployment (authorization server, guard, gateway, users): max {} MiB; {} MiB after warm-up, {} MiB at the end.</p>",
            r["memory"]["max_mib"], r["memory"]["early_mean_mib"], r["memory"]["late_mean_mib"]
        );
        page.push_str(&line_chart("Resident memory (MiB) over the run (s)", series));
    }
    if let Some(guard) = r.get("guard_decision") {
        let _ = write!(
            page,
            "<p>Guard decisions at the gateway (its Prometheus histogram): {} decisions, mean {} µs.</p>",
            guard["count"], guard["mean_us"]
        );
    }
    let _ = write!(
        page,
        "<h2>Attacks</h2><p>{} attempted, {} blocked.</p><table><tr><th>attack</th><th>kind</th><th>outcome</th><th>detail</th></tr>",
        r["attacks"]["attempted"], r["attacks"]["blocked"]
    );
    for a in r["attacks"]["list"].as_array().into_iter().flatten() {
        let blocked = a["blocked"] == true;
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class='{}'>{}</td><td>{}</td></tr>",
            escape(a["name"].as_str().unwrap_or("")),
            escape(a["kind"].as_str().unwrap_or("")),
            if blocked { "ok" } else { "bad" },
            if blocked { "blocked" } else { "THROUGH" },
            escape(a["detail"].as_str().unwrap_or(""))
        );
    }
    page.push_str("</table>");
    let not_run = r["attacks"]["not_run"].as_array().filter(|n| !n.is_empty());
    if let Some(not_run) = not_run {
        page.push_str(
            "<h3>Not run against this target</h3><table><tr><th>attack</th><th>kind</th><th>why</th></tr>",
        );
        for a in not_run {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(a["name"].as_str().unwrap_or("")),
                escape(a["kind"].as_str().unwrap_or("")),
                escape(a["why"].as_str().unwrap_or(""))
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_compares_after_warm_up_with_the_end() {
        // Warm-up to 100 MiB, then flat, then 10 MiB more at the end.
        let samples: Vec<(f64, f64)> = (0..100)
            .map(|i| {
                let mib = if i < 5 {
                    20.0 * f64::from(i)
                } else if i >= 90 {
                    110.0
                } else {
                    100.0
                };
                (f64::from(i), mib)
            })
            .collect();
        let m = memory(&samples);
        assert_eq!(m["early_mean_mib"], 100.0);
        assert_eq!(m["late_mean_mib"], 110.0);
        assert_eq!(m["growth_mib"], 10.0);
        assert_eq!(m["max_mib"], 110.0);
        assert_eq!(memory(&[(0.0, 5.0)])["growth_mib"], 0.0);
        assert_eq!(memory(&[])["samples"], 0);
    }
}
