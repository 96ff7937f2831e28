//! Colours of the tty display, as BuildKit picks them: ended vertices blue, errors red,
//! cancelled vertices and warnings yellow; `BUILDKIT_COLORS=run=…:error=…:cancel=…:warning=…`
//! (a colour name or `R,G,B`) overrides them and `NO_COLOR` turns them off.

/// What a line of the frame shows, which decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Header and running vertices: terminal default.
    Plain,
    /// Completed or cached vertices.
    Done,
    /// Failed vertices.
    Error,
    /// Cancelled vertices.
    Canceled,
    /// Warning summary.
    Warning,
}

/// ANSI colour prefixes per tone; `None` leaves the line alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Palette {
    done: Option<String>,
    error: Option<String>,
    cancel: Option<String>,
    warning: Option<String>,
}

const RESET: &str = "\x1b[0m";

impl Palette {
    /// No colours at all.
    pub fn none() -> Self {
        Palette::default()
    }

    /// BuildKit's defaults.
    pub fn buildkit() -> Self {
        Palette {
            done: color("blue"),
            error: color("red"),
            cancel: color("yellow"),
            warning: color("yellow"),
        }
    }

    /// The palette for the values of `NO_COLOR` and `BUILDKIT_COLORS`; unknown keys and
    /// colours are ignored (a typo must not break a build).
    pub fn from_env(no_color: Option<&str>, buildkit_colors: Option<&str>) -> Self {
        if no_color.is_some_and(|v| !v.is_empty()) {
            return Palette::none();
        }
        let mut p = Palette::buildkit();
        for entry in buildkit_colors.unwrap_or_default().split(':') {
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            let Some(c) = color(value.trim()) else {
                continue;
            };
            match key.trim() {
                "run" => p.done = Some(c),
                "error" => p.error = Some(c),
                "cancel" => p.cancel = Some(c),
                "warning" => p.warning = Some(c),
                _ => {}
            }
        }
        p
    }

    /// The palette the process environment asks for.
    pub fn from_process_env() -> Self {
        let no_color = std::env::var("NO_COLOR").ok();
        let colors = std::env::var("BUILDKIT_COLORS").ok();
        Palette::from_env(no_color.as_deref(), colors.as_deref())
    }

    /// `text` in the colour of `tone`.
    pub fn paint(&self, tone: Tone, text: &str) -> String {
        let prefix = match tone {
            Tone::Plain => None,
            Tone::Done => self.done.as_deref(),
            Tone::Error => self.error.as_deref(),
            Tone::Canceled => self.cancel.as_deref(),
            Tone::Warning => self.warning.as_deref(),
        };
        match prefix {
            Some(p) if !text.is_empty() => format!("{p}{text}{RESET}"),
            _ => text.to_string(),
        }
    }
}

/// The ANSI foreground prefix for a colour name or `R,G,B`.
fn color(spec: &str) -> Option<String> {
    let code = match spec.to_ascii_lowercase().as_str() {
        "black" => 30,
        "red" => 31,
        "green" => 32,
        "yellow" => 33,
        "blue" => 34,
        "magenta" => 35,
        "cyan" => 36,
        "white" => 37,
        "default" => 39,
        other => {
            let parts: Vec<u8> = other
                .split(',')
                .map(|p| p.trim().parse::<u8>())
                .collect::<Result<_, _>>()
                .ok()?;
            return match parts.as_slice() {
                [r, g, b] => Some(format!("\x1b[38;2;{r};{g};{b}m")),
                _ => None,
            };
        }
    };
    Some(format!("\x1b[{code}m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_no_color() {
        let p = Palette::from_env(None, None);
        assert_eq!(p, Palette::buildkit());
        assert_eq!(p.paint(Tone::Done, "x"), "\x1b[34mx\x1b[0m");
        assert_eq!(p.paint(Tone::Error, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(p.paint(Tone::Plain, "x"), "x");

        let p = Palette::from_env(
            None,
            Some("run=123,20,245:error=yellow:bogus=red:cancel=nope"),
        );
        assert_eq!(p.paint(Tone::Done, "x"), "\x1b[38;2;123;20;245mx\x1b[0m");
        assert_eq!(p.paint(Tone::Error, "x"), "\x1b[33mx\x1b[0m");
        assert_eq!(p.paint(Tone::Canceled, "x"), "\x1b[33mx\x1b[0m");

        let p = Palette::from_env(Some("1"), Some("run=red"));
        assert_eq!(p.paint(Tone::Done, "x"), "x");
        // An empty NO_COLOR does not count (no-color.org).
        assert_eq!(Palette::from_env(Some(""), None), Palette::buildkit());
    }
}
