//! The `.tile` lexer: turns source text into tokens with 1-based line and column positions.
//!
//! Names may contain dots (`dve.tensor_reduce`, `sub.rev`, `%x.hi`), so the parser splits
//! dotted words itself. Numbers are kept as text: whether `-3` is an integer of a given width
//! or a float depends on where it appears, which only the parser knows. Newlines are tokens
//! because statements end at the end of a line.

use super::ParseError;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum TokKind {
    /// `[A-Za-z_][A-Za-z0-9_.]*`
    Ident(String),
    /// `-?[0-9]+(.[0-9]+)?([eE][+-]?[0-9]+)?`, or `-` glued to a word (`-inf`).
    Num(String),
    /// One of `{ } [ ] ( ) , : ; * = @ %`.
    Punct(char),
    /// End of a line.
    Newline,
    /// End of the input.
    Eof,
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(super) struct Tok {
    pub kind: TokKind,
    pub line: u32,
    pub column: u32,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match &self.kind {
            TokKind::Ident(s) | TokKind::Num(s) => format!("`{s}`"),
            TokKind::Punct(c) => format!("`{c}`"),
            TokKind::Newline => "end of line".to_string(),
            TokKind::Eof => "end of file".to_string(),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Splits `src` into tokens; the last token is always [`TokKind::Eof`].
pub(super) fn lex(src: &str, file: &str) -> Result<Vec<Tok>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let err = |line, column, message: String| ParseError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = (line, col);
        let take_while = |mut j: usize, f: &dyn Fn(char) -> bool| {
            while j < chars.len() && f(chars[j]) {
                j += 1;
            }
            j
        };
        let mut end = i + 1;
        let kind = match c {
            '\n' => Some(TokKind::Newline),
            '#' => {
                end = take_while(i, &|c| c != '\n');
                None
            }
            c if c.is_whitespace() => None,
            '{' | '}' | '[' | ']' | '(' | ')' | ',' | ':' | ';' | '*' | '=' | '@' | '%' => {
                Some(TokKind::Punct(c))
            }
            c if is_name_start(c) => {
                end = take_while(i, &is_name_char);
                Some(TokKind::Ident(chars[i..end].iter().collect()))
            }
            '-' if chars.get(i + 1).is_some_and(|&c| is_name_start(c)) => {
                // `-inf`: a sign glued to a word; the parser decides whether it is a float.
                end = take_while(i + 1, &is_name_char);
                Some(TokKind::Num(chars[i..end].iter().collect()))
            }
            c if c.is_ascii_digit() || c == '-' => {
                end = number_end(&chars, i).ok_or_else(|| {
                    err(line, col, "`-` must be followed by a number".to_string())
                })?;
                if chars.get(end).is_some_and(|&c| is_name_char(c)) {
                    let bad: String = chars[i..take_while(end, &is_name_char)].iter().collect();
                    return Err(err(line, col, format!("malformed number `{bad}`")));
                }
                Some(TokKind::Num(chars[i..end].iter().collect()))
            }
            other => {
                return Err(err(
                    line,
                    col,
                    format!("unexpected character `{}`", other.escape_debug()),
                ));
            }
        };
        if let Some(kind) = kind {
            toks.push(Tok {
                kind,
                line: start.0,
                column: start.1,
            });
        }
        for &c in &chars[i..end] {
            // Saturating: a pathological multi-gigabyte line must not overflow.
            if c == '\n' {
                line = line.saturating_add(1);
                col = 1;
            } else {
                col = col.saturating_add(1);
            }
        }
        i = end;
    }
    toks.push(Tok {
        kind: TokKind::Eof,
        line,
        column: col,
    });
    Ok(toks)
}

/// End of the number starting at `i` (an optional `-`, digits, an optional fraction and an
/// optional exponent), or `None` when no digit follows the sign.
fn number_end(chars: &[char], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        let from = j;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        (j > from).then_some(j)
    };
    let mut j = if chars[i] == '-' { i + 1 } else { i };
    j = digits(j)?;
    if chars.get(j) == Some(&'.')
        && let Some(k) = digits(j + 1)
    {
        j = k;
    }
    if matches!(chars.get(j), Some('e' | 'E')) {
        let k = if matches!(chars.get(j + 1), Some('+' | '-')) {
            j + 2
        } else {
            j + 1
        };
        if let Some(k) = digits(k) {
            j = k;
        }
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokKind> {
        lex(src, "t").unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_names_and_punctuation() {
        use TokKind::*;
        assert_eq!(
            kinds("sub.rev -1.5e-3, -inf # note\n%x[0:2]"),
            vec![
                Ident("sub.rev".into()),
                Num("-1.5e-3".into()),
                Punct(','),
                Num("-inf".into()),
                Newline,
                Punct('%'),
                Ident("x".into()),
                Punct('['),
                Num("0".into()),
                Punct(':'),
                Num("2".into()),
                Punct(']'),
                Eof,
            ]
        );
    }

    #[test]
    fn positions_are_one_based_columns_in_chars() {
        assert!(lex("é", "t").is_err());
        let toks = lex("# é\n  x y", "t").unwrap();
        assert_eq!((toks[1].line, toks[1].column), (2, 3));
        assert_eq!((toks[2].line, toks[2].column), (2, 5));
    }

    #[test]
    fn malformed_numbers_are_errors() {
        assert!(lex("12ab", "t").is_err());
        assert!(lex("- 3", "t").is_err());
        assert!(lex("1e", "t").is_err());
    }
}
