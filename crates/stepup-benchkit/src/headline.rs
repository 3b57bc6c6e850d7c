//! The suite's summary lines: each benchmark writes, beside its own
//! figures, the few that the project's goals name, with their spread over
//! the rounds and the target they are held to; `bench-report` gathers them
//! into one Markdown table.

use serde_json::{Value, json};

/// What a figure is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

impl Target {
    /// Whether `value` meets it.
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            Target::AtLeast(floor) => value >= floor,
        }
    }

    /// `{"at_most": x}` or `{"at_least": x}`, as figures files carry it.
    pub fn json(self) -> Value {
        match self {
            Target::AtMost(limit) => json!({ "at_most": limit }),
            Target::AtLeast(floor) => json!({ "at_least": floor }),
        }
    }

    /// The target a figures file carries.
    pub fn from_json(bound: &Value) -> Option<Self> {
        if let Some(limit) = bound["at_most"].as_f64() {
            return Some(Target::AtMost(limit));
        }
        bound["at_least"].as_f64().map(Target::AtLeast)
    }

    fn text(self, unit: &str) -> String {
        match self {
            Target::AtMost(limit) => format!("≤ {}{}", number(limit), spaced(unit)),
            Target::AtLeast(floor) => format!("≥ {}{}", number(floor), spaced(unit)),
        }
    }
}

/// One summary line: a figure (the median over rounds), the interquartile
/// range of the rounds, and its target if the project sets one.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// What is measured, in words (`verify + decide / bare ES256 verify`).
    pub figure: String,
    /// The median.
    pub value: f64,
    /// `×`, `µs`, `ns`, `req/s`, `MiB`...
    pub unit: &'static str,
    /// First and third quartiles of the rounds (`None`: a single figure).
    pub spread: Option<(f64, f64)>,
    /// What it is held to.
    pub target: Option<Target>,
}

impl Headline {
    /// A figure from its rounds: the median, and the quartiles as spread.
    pub fn from_rounds(figure: impl Into<String>, rounds: &[f64], unit: &'static str) -> Self {
        let (q1, q2, q3) = quartiles(rounds);
        Self {
            figure: figure.into(),
            value: q2,
            unit,
            spread: (rounds.len() > 1).then_some((q1, q3)),
            target: None,
        }
    }

    /// A single figure.
    pub fn single(figure: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            value,
            unit,
            spread: None,
            target: None,
        }
    }

    /// Held to `target`.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The JSON form `bench-report` reads.
    pub fn json(&self) -> Value {
        json!({
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "spread": self.spread.map(|(a, b)| [a, b]),
            "target": self.target.map(|t| t.text(self.unit)),
            "bound": self.target.map(Target::json),
            "met": self.target.map(|t| t.met_by(self.value)),
        })
    }
}

/// The headlines as the `headlines` member of a figures file.
pub fn headlines_json(headlines: &[Headline]) -> Value {
    Value::Array(headlines.iter().map(Headline::json).collect())
}

/// First quartile, median, third quartile (linear interpolation between
/// closest ranks); zeros when empty.
pub fn quartiles(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        match sorted.len() {
            0 => 0.0,
            n => {
                let position = q * (n - 1) as f64;
                let (low, high) = (position.floor() as usize, position.ceil() as usize);
                sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
            }
        }
    };
    (at(0.25), at(0.5), at(0.75))
}

/// A figure with three significant digits, thousands separated.
pub fn number(x: f64) -> String {
    let magnitude = x.abs();
    if magnitude >= 1000.0 {
        crate::thousands(x)
    } else if magnitude >= 100.0 {
        format!("{x:.0}")
    } else if magnitude >= 10.0 {
        format!("{x:.1}")
    } else if magnitude >= 1.0 {
        format!("{x:.2}")
    } else if magnitude == 0.0 {
        "0".to_owned()
    } else {
        // Three significant digits below 1.
        let digits = (-magnitude.log10().floor()) as usize + 2;
        format!("{x:.digits$}")
    }
}

fn spaced(unit: &str) -> String {
    if unit == "×" || unit.is_empty() {
        unit.to_owned()
    } else {
        format!(" {unit}")
    }
}

/// `value unit`, as the report shows it.
pub fn with_unit(value: f64, unit: &str) -> String {
    format!("{}{}", number(value), spaced(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_targets_and_numbers() {
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0]), (2.0, 3.0, 4.0));
        assert_eq!(quartiles(&[4.0, 1.0]), (1.75, 2.5, 3.25));
        assert_eq!(quartiles(&[]), (0.0, 0.0, 0.0));
        let h = Headline::from_rounds("verify + decide / verify", &[1.02, 1.05, 1.04], "×")
            .target(Target::AtMost(1.15));
        assert_eq!(h.value, 1.04);
        let j = h.json();
        assert_eq!(j["met"], true);
        assert_eq!(j["target"], "≤ 1.15×");
        assert_eq!(j["spread"], json!([1.03, 1.045]));
        assert_eq!(Target::from_json(&j["bound"]), Some(Target::AtMost(1.15)));
        let missed = Headline::single("gateway / direct", 0.71, "×").target(Target::AtLeast(0.85));
        assert_eq!(missed.json()["met"], false);
        assert_eq!(missed.json()["spread"], Value::Null);
        assert_eq!(number(0.004_213), "0.00421");
        assert_eq!(number(448.4), "448");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(61_234.0), "61,234");
        assert_eq!(with_unit(20.0, "MiB"), "20.0 MiB");
        assert_eq!(with_unit(1.5, "×"), "1.50×");
    }
}
