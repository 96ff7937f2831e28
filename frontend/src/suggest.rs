//! "Did you mean ...?" suggestions for misspelt names (flags, mount keys, ARGs, variables).

/// Edit distance in characters, counting a swap of two neighbours as one edit
/// (optimal string alignment).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `input`, if it is close enough to be a likely typo.
pub fn closest<'a, I>(input: &str, candidates: I, case_sensitive: bool) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let input_n = norm(input);
    // Allow about one edit per three characters, at least one and at most three.
    let max = (input.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == input {
            continue;
        }
        let d = distance(&input_n, &norm(c));
        if d <= max && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `" (did you mean X?)"` or an empty string.
pub fn did_you_mean<'a, I>(input: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match closest(input, candidates, false) {
        Some(c) => format!(" (did you mean {c}?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(closest("mout", ["mount", "network"], true), Some("mount"));
        assert_eq!(closest("xyz", ["mount", "network"], true), None);
        assert_eq!(
            closest("TARGETARC", ["TARGETARCH", "TARGETOS"], true),
            Some("TARGETARCH")
        );
        assert_eq!(
            did_you_mean("ro", ["rw", "readonly"]),
            " (did you mean rw?)"
        );
    }
}
