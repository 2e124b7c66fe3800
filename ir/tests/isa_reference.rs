//! `docs/isa.md` holds the instruction reference generated from the definitions
//! (`tessera_ir::isa_doc::reference`): this test fails when the page has drifted from them.
//! `TESSERA_BLESS=1 cargo test -p tessera-ir --test isa_reference` rewrites the page.

use std::collections::BTreeSet;
use std::path::Path;
use tessera_ir::isa_doc::{TOUR, reference};
use tessera_ir::{Op, TargetSpec};

const BEGIN: &str =
    "<!-- generated from ir/src/isa_doc.rs by ir/tests/isa_reference.rs: do not edit by hand -->\n";
const END: &str = "<!-- end of the generated part -->";

#[test]
fn the_tour_uses_every_instruction_and_passes_the_verifier() {
    let program = tessera_ir::text::parse(TOUR, "isa_tour.tile").expect("the tour parses");
    tessera_ir::verify(&program, &TargetSpec::trn2()).expect("the tour keeps every rule");
    tessera_ir::verify(&program, &TargetSpec::trn1()).expect("on trn1 too");
    let seen: BTreeSet<&str> = program.insts.iter().map(|i| i.op.opcode()).collect();
    // Every opcode of `Op` (alloc and free included); a new variant must join the tour.
    let all = [
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
    ];
    assert_eq!(seen, all.into_iter().collect::<BTreeSet<_>>());
    // Each opcode's line in the generated table.
    let text = reference();
    for inst in &program.insts {
        if !matches!(inst.op, Op::Alloc { .. } | Op::Free { .. }) {
            assert!(
                text.contains(&format!("| `{}` |", inst.op.opcode())),
                "{text}"
            );
        }
    }
}

#[test]
fn docs_isa_md_holds_the_generated_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/isa.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let (Some(b), Some(e)) = (page.find(BEGIN), page.find(END)) else {
        panic!("docs/isa.md has no generated part (markers {BEGIN:?} and {END:?})");
    };
    let current = &page[b + BEGIN.len()..e];
    let want = reference();
    if current != want {
        if std::env::var_os("TESSERA_BLESS").is_some() {
            let updated = format!("{}{BEGIN}{want}{}", &page[..b], &page[e..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "docs/isa.md differs from the definitions; rerun with TESSERA_BLESS=1 to regenerate it.\n--- generated ---\n{want}"
        );
    }
}
