//! A strict reader of the Prometheus text format, for exact assertions on `/metrics`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Every sample line; panics on a line it cannot read, so a format regression fails loudly.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("unreadable sample line: {line}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The samples of one metric whose labels include every `(key, value)` given.
pub fn select<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(v)))
        .collect()
}

/// The one value of a series, or 0 when it does not exist (a counter never incremented).
pub fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = select(samples, name, with);
    assert!(
        found.len() <= 1,
        "{name} {with:?} matches {} series",
        found.len()
    );
    found.first().map_or(0.0, |s| s.value)
}

#[test]
fn reads_names_labels_and_escapes() {
    let samples =
        parse("# HELP x y\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nup 1\nh_bucket{le=\"+Inf\"} 2\n");
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].label("b"), Some("q\"uote"));
    assert_eq!(value(&samples, "up", &[]), 1.0);
    assert_eq!(value(&samples, "h_bucket", &[("le", "+Inf")]), 2.0);
}
