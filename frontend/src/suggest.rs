//! "Did you mean ...?" suggestions for misspelt names (flags, mount keys, ARGs, variables).

/// Levenshtein distance in characters.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
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
        assert_eq!(closest("TARGETARC", ["TARGETARCH", "TARGETOS"], true), Some("TARGETARCH"));
        assert_eq!(did_you_mean("ro", ["rw", "readonly"]), " (did you mean rw?)");
    }
}
