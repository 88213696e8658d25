//! The Prometheus text format, read back: one [`Sample`] per line, and a typed error naming the
//! line that could not be read (a proxy answering garbage is reported, never half-read).

use std::collections::BTreeMap;

/// One sample line: a metric name, its labels, its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name, suffix included (`mesh_http_requests_total`, `..._bucket`).
    pub name: String,
    /// The labels, by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if set.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A line of an exposition that is not a valid sample.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct TextError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
    /// The line's start (at most 80 characters).
    pub text: String,
}

/// The longest exposition read (a proxy's is a few hundred KiB at its label cap).
pub(crate) const MAX_TEXT: usize = 16 * 1024 * 1024;

/// Reads every sample of `text`. Comments (`# HELP`, `# TYPE`) and blank lines are skipped; any
/// other line must be `name{labels} value [timestamp]`.
pub fn parse(text: &str) -> Result<Vec<Sample>, TextError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason| TextError {
            line: i + 1,
            reason,
            text: line.chars().take(80).collect(),
        };
        samples.push(parse_line(line).map_err(fail)?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "the value is not a number")?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "the timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("more after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `name="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without a value")?;
        let name = s[..eq].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("an invalid label name");
        }
        let after = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("a bad escape in a label value"),
                },
                Some((_, c)) => value.push(c),
                None => return Err("a label value not closed"),
            }
        };
        labels.insert(name.to_owned(), value);
        s = &after[end + 1..];
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("labels not separated by commas");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_come_back_with_their_labels() {
        let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"\\n\"} 3\nup 1 1700000000000\n\
                    h_bucket{le=\"+Inf\"} 7\nh_sum 0.25\n";
        let samples = parse(text).expect("valid");
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].label("b"), Some("q\"\n"));
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert_eq!(samples[3].value, 0.25);
    }

    #[test]
    fn garbage_names_its_line() {
        for (text, line) in [
            ("ok 1\n<html>\n", 2),
            ("x{a=\"1\" 2\n", 1),
            ("x{a=1} 2\n", 1),
            ("x nope\n", 1),
            ("ok 1\n\nx 1 2 3\n", 3),
            ("{a=\"b\"} 1\n", 1),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
