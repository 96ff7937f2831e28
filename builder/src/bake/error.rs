//! What can go wrong reading bake files and resolving targets.

/// A bake error: each names the file and position, or the block and attribute.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// A bake file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No file given and none of the default names exists.
    #[error("couldn't find a bake definition (looked for {0})")]
    NoFiles(String),
    /// A file does not parse (HCL, JSON or YAML syntax).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// An expression fails to evaluate or has the wrong type.
    #[error("{at}: {what}: {message}")]
    Eval {
        /// `file:line:column` of the attribute (or block), or the file alone.
        at: String,
        /// The block and attribute, e.g. `target "app" attribute "tags"`.
        what: String,
        /// Why.
        message: String,
    },
    /// A definition is wrong as a whole (unknown target, a cycle, a bad override).
    #[error("{0}")]
    Definition(String),
}

/// A `Definition` error.
pub fn definition(msg: impl Into<String>) -> BakeError {
    BakeError::Definition(msg.into())
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = text.get(..offset).unwrap_or(text);
    let line = upto.matches('\n').count() + 1;
    let column = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
