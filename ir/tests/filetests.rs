//! Golden filetests for the `.tile` format: every `ir/tests/filetests/*.tile` must be in
//! canonical form, i.e. its body (the file minus its leading `#` header lines) equals
//! `print(parse(file))`.
//!
//! With `TESSERA_BLESS=1` a mismatching file is rewritten (header kept, body reprinted)
//! instead of failing. A file that does not parse always fails: blessing cannot fix it.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use tessera_ir::text::{parse, print};

fn filetest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("filetests")
}

fn tile_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(filetest_dir())
        .expect("ir/tests/filetests exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tile"))
        .collect();
    files.sort();
    files
}

/// The leading `#` lines (each with its newline) and the rest of the file.
fn split_header(text: &str) -> (&str, &str) {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        if !line.starts_with('#') {
            break;
        }
        end += line.len();
    }
    text.split_at(end)
}

/// A line diff (longest common subsequence), `-` for expected lines and `+` for actual ones.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the trailing newline differs)\n");
    }
    out
}

#[test]
fn tile_files_are_in_canonical_form() {
    let bless = std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1");
    let files = tile_files();
    assert!(
        !files.is_empty(),
        "no .tile files in {}",
        filetest_dir().display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(path).expect("readable filetest");
        let (header, body) = split_header(&text);
        let program = match parse(&text, &name) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        let printed = print(&program);
        if printed == body {
            continue;
        }
        if bless {
            std::fs::write(path, format!("{header}{printed}")).expect("writable filetest");
            eprintln!("blessed {name}");
        } else {
            failures.push(format!(
                "{name}: not in canonical form (- expected in file, + printed):\n{}",
                diff(body, &printed)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed (rerun with TESSERA_BLESS=1 to accept the printed form):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_opcode_has_a_golden_file() {
    let mut seen = std::collections::HashSet::new();
    for path in tile_files() {
        let text = std::fs::read_to_string(&path).expect("readable filetest");
        if let Ok(p) = parse(&text, "x") {
            seen.extend(p.insts.iter().map(|i| i.op.opcode()));
        }
    }
    for opcode in [
        "alloc",
        "free",
        "dma_copy",
        "nc_matmul",
        "nc_transpose",
        "activation",
        "tensor_tensor",
        "tensor_scalar",
        "tensor_reduce",
        "tensor_copy",
        "memset",
        "iota",
        "affine_select",
        "select",
    ] {
        assert!(seen.contains(opcode), "no filetest uses {opcode}");
    }
}

#[test]
fn headers_are_kept_and_diffs_are_readable() {
    let (h, b) = split_header("# one\n# two\nkernel k {\n}\n");
    assert_eq!((h, b), ("# one\n# two\n", "kernel k {\n}\n"));
    let d = diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n- b\n+ x\n  c\n");
}

/// The golden files are small real kernels: each must also satisfy every hardware rule on both
/// targets, so the printer, the parser and the verifier are checked against the same programs.
#[test]
fn golden_files_pass_the_verifier() {
    let mut failures = Vec::new();
    for path in tile_files() {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&path).expect("readable filetest");
        let Ok(program) = parse(&text, &name) else {
            continue; // reported by tile_files_are_in_canonical_form
        };
        for target in [
            tessera_ir::TargetSpec::trn1(),
            tessera_ir::TargetSpec::trn2(),
        ] {
            if let Err(e) = tessera_ir::verify(&program, &target) {
                failures.push(format!("{name} on {target}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
