//! `kiln dockerfile parse FILE|-`: prints a Dockerfile's AST as JSON or in BuildKit's dump format.

use kiln_frontend::SourceError;
use miette::{Diagnostic, IntoDiagnostic, LabeledSpan, NamedSource, SourceCode, WrapErr};
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln dockerfile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DockerfileCommand,
}

/// Sub-verbs of `kiln dockerfile`.
#[derive(Debug, clap::Subcommand)]
pub enum DockerfileCommand {
    /// Parse a Dockerfile and print its syntax tree.
    Parse(ParseArgs),
}

/// Output formats of `kiln dockerfile parse`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// The AST as JSON: instructions, keywords, flags, arguments, heredocs, line ranges.
    Json,
    /// BuildKit's `Node.Dump()` text, one `(instruction ...)` per line.
    Dump,
}

/// Arguments of `kiln dockerfile parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The Dockerfile to parse, `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

/// Runs `kiln dockerfile ...`.
pub fn run(args: Args) -> miette::Result<ExitCode> {
    match args.command {
        DockerfileCommand::Parse(args) => parse(args),
    }
}

fn parse(args: ParseArgs) -> miette::Result<ExitCode> {
    let (name, bytes) = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .into_diagnostic()
            .wrap_err("reading standard input")?;
        ("<stdin>".to_string(), buf)
    } else {
        let bytes = std::fs::read(&args.file)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), bytes)
    };
    let ast = kiln_frontend::parse_named(&name, &bytes)
        .map_err(|e| report(e, &name, &String::from_utf8_lossy(&bytes)))?;
    match args.format {
        Format::Dump => println!("{}", ast.dump()),
        Format::Json => {
            let json = serde_json::to_string_pretty(&ast)
                .into_diagnostic()
                .wrap_err("encoding the AST as JSON")?;
            println!("{json}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Turns a frontend [`SourceError`] into a miette report showing the offending line with a
/// label and the hint. `source` is the whole file the error refers to.
pub fn report(err: SourceError, name: &str, source: &str) -> miette::Report {
    let source = source
        .strip_prefix('\u{feff}')
        .unwrap_or(source)
        .to_string();
    let offset = byte_offset(&source, err.location.line, err.location.column);
    let len = source
        .get(offset..)
        .map(|rest| {
            rest.chars()
                .take(err.location.len)
                .take_while(|&c| c != '\n')
                .map(char::len_utf8)
                .sum()
        })
        .unwrap_or(0);
    miette::Report::new(Rendered {
        src: NamedSource::new(name, source),
        offset,
        len,
        err,
    })
}

/// Byte offset of 1-based `line` / `column` (characters) in `source`, clamped to the text.
fn byte_offset(source: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match source[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return source.len(),
        }
    }
    let line_text = source[start..].split('\n').next().unwrap_or("");
    start
        + line_text
            .chars()
            .take(column.saturating_sub(1))
            .map(char::len_utf8)
            .sum::<usize>()
}

#[derive(Debug)]
struct Rendered {
    err: SourceError,
    src: NamedSource<String>,
    offset: usize,
    len: usize,
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.err.location, self.err.message)
    }
}

impl std::error::Error for Rendered {}

impl Diagnostic for Rendered {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.src)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = LabeledSpan::new(Some("here".into()), self.offset, self.len);
        Some(Box::new(std::iter::once(label)))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.err
            .hint
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

#[cfg(test)]
mod tests {
    use super::byte_offset;

    #[test]
    fn offsets_count_characters() {
        let src = "FROM a\nRUN é <<EOF\n";
        assert_eq!(byte_offset(src, 1, 1), 0);
        assert_eq!(byte_offset(src, 2, 7), 7 + 7);
        assert_eq!(byte_offset(src, 9, 1), src.len());
    }
}
