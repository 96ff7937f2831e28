//! Left-aligned text columns, like Go's tabwriter as docker and buildx use it.

/// Each column as wide as its widest cell plus `pad` spaces; the last cell of
/// a row is not padded and trailing blanks are trimmed. One line per row.
pub fn columns(rows: &[Vec<String>], pad: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 < r.len() {
                let w = widths.get(c).copied().unwrap_or(0) + pad;
                line.push_str(&format!("{cell:<w$}"));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pads_to_the_widest_cell_but_not_the_last_column() {
        let rows = vec![
            row(&["REPOSITORY", "TAG", "ID"]),
            row(&["a", "latest", "x"]),
            row(&["bb"]),
        ];
        assert_eq!(
            columns(&rows, 3),
            "REPOSITORY   TAG      ID\na            latest   x\nbb\n"
        );
        assert_eq!(columns(&[row(&["k:", "v"])], 1), "k: v\n");
        assert_eq!(columns(&[], 3), "");
        // An empty last cell leaves no trailing blanks.
        let targets = vec![
            row(&["TARGET", "DESCRIPTION"]),
            row(&["build (default)", ""]),
        ];
        assert_eq!(
            columns(&targets, 3),
            "TARGET            DESCRIPTION\nbuild (default)\n"
        );
    }
}
