//! Reading the Prometheus text format a node serves at `/metrics`, the way a query selects a
//! series: by name and the labels the caller names, whatever other labels the series carries
//! (every node adds `table="…"` to all of its series).

/// One sample: the series' name, its labels and its value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// A series' name and labels, from a sample line `name{k="v",…} value`.
fn parse(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut out = Vec::new();
    // Label values here never hold `",` (names, reasons, outcomes), so a split on it is exact.
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once("=\"")?;
        out.push((k, v.trim_end_matches('"')));
    }
    Some((name, out, value))
}

/// The sum of the samples of `selector` in `text`: `name` or `name{k="v",…}`, matching every
/// series of that name whose labels include the named ones. `None` when no series matches.
pub fn value(text: &str, selector: &str) -> Option<f64> {
    let (want_name, want) = match selector.split_once('{') {
        Some((n, rest)) => {
            let line = format!("{n}{{{rest} 0");
            let (_, labels, _) = parse(&line)?;
            let owned: Vec<(String, String)> = labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (n, owned)
        }
        None => (selector, Vec::new()),
    };
    let mut sum = None;
    for line in text.lines() {
        let Some((name, labels, v)) = parse(line) else {
            continue;
        };
        if name == want_name
            && want
                .iter()
                .all(|(k, val)| labels.iter().any(|(lk, lv)| lk == k && lv == val))
        {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn series_are_selected_by_name_and_the_named_labels_only() {
        let text = "# TYPE a counter\n\
                    a{table=\"main\",outcome=\"ok\"} 2\n\
                    a{outcome=\"no\",table=\"main\"} 3\n\
                    ab{table=\"main\"} 100\n\
                    b 7\n";
        assert_eq!(value(text, "a{outcome=\"ok\"}"), Some(2.0));
        assert_eq!(value(text, "a"), Some(5.0), "all of a's series");
        assert_eq!(value(text, "b"), Some(7.0));
        assert_eq!(value(text, "a{outcome=\"maybe\"}"), None);
        assert_eq!(value(text, "c"), None);
    }
}
