//! The `.tile` text format: a printer and a parser for tile programs. `parse(print(p))` means
//! the same as `p`. The grammar is documented in `docs/tile-format.md`.
//!
//! ```
//! use tessera_ir::text::{parse, print};
//!
//! let src = "kernel zero {\n  output @y: f32[4, 8]\n  alloc %t: sbuf f32[4, 8]\n  \
//!            dve.memset %t[0:4][0; 1*8], 0.0\n  dma.dma_copy @y[0; 8*4, 1*8], %t[0:4][0; 1*8]\n  \
//!            free %t\n}\n";
//! let program = parse(src, "zero.tile").unwrap();
//! assert_eq!(program.insts.len(), 4);
//! assert_eq!(program.insts[1].loc.as_ref().unwrap().line, 4);
//! assert_eq!(print(&program), src);
//! ```
//!
//! The printed form is canonical (one spelling per program), so it doubles as the expected
//! output of the golden files under `ir/tests/filetests/`.

mod lex;
mod parse;
mod print;

use crate::program::TileProgram;
use std::fmt;

/// A syntax or name error in a `.tile` file, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// File name given to [`parse`].
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Prints a program in the `.tile` format, in its canonical form: `kernel NAME {`, the tensor
/// declarations in order, the instructions, `}` and a newline, with a two-space indent.
///
/// Buffers are written only through their `alloc` lines, and [`parse`] numbers them in the
/// order of those lines: `parse(print(p))` reproduces `p` when each buffer is allocated by
/// exactly one `alloc`, buffers are listed in alloc order, and names are valid and unique. A
/// buffer with no `alloc` gets one invented just before its first use (or at the end), so the
/// output still parses. Never panics, even on a malformed program.
pub fn print(program: &TileProgram) -> String {
    print::print(program)
}

/// Prints a machine program (queues, waits, placements) for reading; not parsed back.
pub fn print_machine(program: &crate::machine::MachineProgram) -> String {
    print::print_machine(program)
}

/// Parses a `.tile` program; `file` names the source in errors and instruction locations.
///
/// Each instruction's [`crate::Inst::loc`] is the line and column of its first token. Names
/// must be declared (tensors) or allocated (buffers) before use, and only once. Hardware rules
/// are not checked here: run [`crate::verify`] on the result. Never panics.
pub fn parse(src: &str, file: &str) -> Result<TileProgram, ParseError> {
    parse::parse(src, file)
}
