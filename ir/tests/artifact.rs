//! The `.tsr` format: round trips, determinism, atomic files, and every way decoding refuses a
//! file, each with the words of its message. One small hand-built artifact is the starting point;
//! each rejection test breaks it in exactly one way.

use proptest::prelude::*;
use tessera_ir::artifact::{
    self, Artifact, ArtifactError, FORMAT_VERSION, HEADER_BYTES, Signature, SignatureEntry,
};
use tessera_ir::{
    ActFunc, BufId, Buffer, DType, Dim, DmaOperand, Engine, HbmAccess, HbmTensor, HostTensor,
    MachineInst, MachineProgram, Op, Origin, Placement, Queue, QueueId, Rule, Scalar, Space,
    TensorId, TensorKind, TileAccess, Wait,
};

const P: u32 = 128;
const N: u32 = 64;

fn tensor(name: &str, shape: &[usize], kind: TensorKind) -> HbmTensor {
    HbmTensor {
        name: name.into(),
        dtype: DType::F32,
        shape: shape.to_vec(),
        kind,
    }
}

fn sbuf(name: &str, free: usize, byte_offset: u64) -> Buffer {
    Buffer {
        name: name.into(),
        space: Space::Sbuf,
        dtype: DType::F32,
        partitions: P,
        free_shape: vec![free],
        placement: Some(Placement {
            partition: 0,
            byte_offset,
        }),
    }
}

/// `P x n` contiguous elements of buffer `b`.
fn rows(b: u32, n: u32) -> TileAccess {
    TileAccess {
        buf: BufId(b),
        start_partition: 0,
        partitions: P,
        offset: 0,
        dims: vec![Dim::new(1, n)],
    }
}

/// The whole `[P, n]` tensor `t`, rows walking the partitions.
fn whole(t: u32, n: u32) -> DmaOperand {
    DmaOperand::Hbm(HbmAccess {
        tensor: TensorId(t),
        offset: 0,
        dims: vec![Dim::new(n as i64, P), Dim::new(1, n)],
    })
}

fn inst(op: Op, waits: &[(u32, u32)], tile_index: u32) -> MachineInst {
    MachineInst {
        op,
        waits: waits
            .iter()
            .map(|&(q, count)| Wait {
                queue: QueueId(q),
                count,
            })
            .collect(),
        origin: Origin {
            node: "relu_bias".into(),
            tile_index,
        },
    }
}

/// `y = relu(x + b)`: DMA loads of `x` and the weight `b` on one queue, the activation on ACT,
/// the store on a second DMA queue; each stage waits on the one before.
fn sample() -> Artifact {
    let program = MachineProgram {
        name: "relu_bias".into(),
        tensors: vec![
            tensor("x", &[P as usize, N as usize], TensorKind::Input),
            tensor("b", &[P as usize, 1], TensorKind::Input),
            tensor("y", &[P as usize, N as usize], TensorKind::Output),
        ],
        hbm_offsets: vec![None; 3],
        scratch_bytes: 0,
        buffers: vec![
            sbuf("xt", N as usize, 0),
            sbuf("bt", 1, 256),
            sbuf("yt", N as usize, 512),
        ],
        queues: vec![
            Queue {
                name: "dma0".into(),
                engine: Engine::Dma,
                insts: vec![
                    inst(
                        Op::DmaCopy {
                            dst: DmaOperand::Tile(rows(0, N)),
                            src: whole(0, N),
                        },
                        &[],
                        0,
                    ),
                    inst(
                        Op::DmaCopy {
                            dst: DmaOperand::Tile(rows(1, 1)),
                            src: whole(1, 1),
                        },
                        &[],
                        1,
                    ),
                ],
            },
            Queue {
                name: "act".into(),
                engine: Engine::Act,
                insts: vec![inst(
                    Op::Activation {
                        dst: rows(2, N),
                        src: rows(0, N),
                        func: ActFunc::Relu,
                        scale: Scalar::Imm(1.0),
                        bias: Scalar::PerPartition(rows(1, 1)),
                        accum: None,
                    },
                    &[(0, 2)],
                    2,
                )],
            },
            Queue {
                name: "dma1".into(),
                engine: Engine::Dma,
                insts: vec![inst(
                    Op::DmaCopy {
                        dst: whole(2, N),
                        src: DmaOperand::Tile(rows(2, N)),
                    },
                    &[(1, 1)],
                    3,
                )],
            },
        ],
    };
    let bias: Vec<f64> = (0..P).map(|i| f64::from(i) * 0.25 - 8.0).collect();
    Artifact {
        target: "trn2".into(),
        flags: "-O1 --auto-cast none".into(),
        signature: Signature {
            inputs: vec![entry("x", 0, N as usize)],
            outputs: vec![entry("y", 2, N as usize)],
        },
        weights: vec![(
            TensorId(1),
            HostTensor::from_f64(DType::F32, &[P as usize, 1], &bias),
        )],
        program,
    }
}

fn entry(name: &str, tensor: u32, n: usize) -> SignatureEntry {
    SignatureEntry {
        name: name.into(),
        tensor: TensorId(tensor),
        dtype: DType::F32,
        shape: vec![P as usize, n],
    }
}

/// The error decoding `bytes` gives, with its message.
fn reject(bytes: &[u8]) -> (ArtifactError, String) {
    let e = artifact::decode(bytes).expect_err("decoding should fail");
    let msg = e.to_string();
    (e, msg)
}

/// Encodes an artifact that need not be valid, with a correct header, to test `validate`.
fn reject_artifact(a: &Artifact) -> (ArtifactError, String) {
    let e = artifact::validate(a).expect_err("validation should fail");
    let via_decode = artifact::decode(&artifact::encode(a)).expect_err("decode validates");
    assert_eq!(e.to_string(), via_decode.to_string());
    let msg = e.to_string();
    (e, msg)
}

/// Replaces the header's length and checksum to match a new payload.
fn with_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = artifact::encode(&sample())[..4 + 4].to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------------------------
// Round trips and determinism

#[test]
fn sample_is_valid_and_round_trips() {
    let a = sample();
    artifact::validate(&a).expect("the sample is valid");
    let bytes = artifact::encode(&a);
    assert_eq!(&bytes[..4], b"TSRA");
    assert_eq!(bytes[4..8], FORMAT_VERSION.to_le_bytes());
    assert_eq!(
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        (bytes.len() - HEADER_BYTES) as u64
    );
    assert_eq!(artifact::decode(&bytes).expect("decodes"), a);
    eprintln!("sample artifact: {} bytes", bytes.len());
    // The 512-byte weight is most of it; the program itself is a few hundred bytes.
    assert!(
        bytes.len() < 1200,
        "sample artifact is {} bytes",
        bytes.len()
    );
}

#[test]
fn weights_of_every_dtype_round_trip_bit_for_bit() {
    for d in tessera_ir::dtype::ALL_DTYPES {
        let mut a = sample();
        a.program.tensors[1].dtype = d;
        let n = P as usize * d.size_bytes();
        // Arbitrary bytes: u64 and i64 values far above 2^53 must come back unchanged.
        let data = (0..n)
            .map(|i| {
                if d == DType::Bool {
                    (i % 2) as u8
                } else {
                    (i * 37 + 11) as u8
                }
            })
            .collect();
        a.weights[0].1 = HostTensor {
            dtype: d,
            shape: vec![P as usize, 1],
            data,
        };
        assert_eq!(
            artifact::decode(&artifact::encode(&a)).expect("decodes"),
            a,
            "{d}"
        );
    }
}

#[test]
fn encoding_is_deterministic() {
    let a = sample();
    let first = artifact::encode(&a);
    assert_eq!(first, artifact::encode(&a));
    assert_eq!(first, artifact::encode(&a.clone()));
    // Decoding and re-encoding gives the same bytes too, so a copy through the runtime is exact.
    assert_eq!(first, artifact::encode(&artifact::decode(&first).unwrap()));
}

#[test]
fn files_round_trip_and_replace_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.tsr");
    let a = sample();
    artifact::write_atomic(&path, &a).expect("writes");
    assert_eq!(artifact::read(&path).expect("reads"), a);
    // Overwriting replaces the file whole and leaves nothing else behind.
    let mut b = sample();
    b.flags = "-O3".into();
    artifact::write_atomic(&path, &b).expect("overwrites");
    assert_eq!(artifact::read(&path).unwrap().flags, "-O3");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.tsr")]);
}

#[test]
fn a_failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("model.tsr");
    let e = artifact::write_atomic(&path, &sample()).expect_err("the directory does not exist");
    assert!(matches!(e, ArtifactError::Io { .. }), "{e:?}");
    assert!(e.to_string().starts_with("cannot create "), "{e}");
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The rename fails when the destination is a non-empty directory: the temporary file that
    // was already written must be removed.
    let blocked = dir.path().join("blocked.tsr");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"x").unwrap();
    let e = artifact::write_atomic(&blocked, &sample()).expect_err("cannot replace a directory");
    assert!(e.to_string().contains("rename"), "{e}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("blocked.tsr")]);
}

#[test]
fn reading_a_missing_file_names_it() {
    let e = artifact::read(std::path::Path::new("/nonexistent/x.tsr")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/x.tsr: "),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections: the container

#[test]
fn wrong_magic() {
    let (e, msg) = reject(b"PK\x03\x04 a zip file, say");
    assert!(matches!(e, ArtifactError::BadMagic { .. }));
    assert!(
        msg.starts_with("not a tessera artifact (.tsr): starts with b\"PK\\x03\\x04\""),
        "{msg}"
    );
    let mut bytes = artifact::encode(&sample());
    bytes[0] = b'X';
    assert!(reject(&bytes).1.contains("starts with b\"XSRA\""));
}

#[test]
fn other_format_versions() {
    let mut bytes = artifact::encode(&sample());
    bytes[4..8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let (e, msg) = reject(&bytes);
    assert!(matches!(e, ArtifactError::Version { found, supported }
        if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION));
    assert!(
        msg.contains(&format!(
            "version {}: this build reads version {FORMAT_VERSION}",
            FORMAT_VERSION + 1
        )),
        "{msg}"
    );
    assert!(msg.contains("newer tessera"), "{msg}");
    bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
    assert!(reject(&bytes).1.contains("older tessera"));
}

#[test]
fn truncation_anywhere() {
    let bytes = artifact::encode(&sample());
    let len = bytes.len();
    for cut in [0, 2, 4, 7, 8, 12, HEADER_BYTES - 1] {
        let (e, msg) = reject(&bytes[..cut]);
        assert!(
            matches!(e, ArtifactError::Truncated { part: "header", .. }),
            "cut at {cut}: {msg}"
        );
        assert!(msg.contains(&format!("needs 20 bytes but only {cut} are present")));
    }
    for cut in [HEADER_BYTES, HEADER_BYTES + 1, len / 2, len - 1] {
        let (e, msg) = reject(&bytes[..cut]);
        assert!(
            matches!(
                e,
                ArtifactError::Truncated {
                    part: "payload",
                    ..
                }
            ),
            "cut at {cut}: {msg}"
        );
        assert!(
            msg.contains(&format!(
                "the payload needs {} bytes but only {} are present",
                len - HEADER_BYTES,
                cut - HEADER_BYTES
            )),
            "{msg}"
        );
    }
}

#[test]
fn a_huge_declared_length_is_a_truncation_not_an_allocation() {
    let mut bytes = artifact::encode(&sample());
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let (e, _) = reject(&bytes);
    assert!(matches!(
        e,
        ArtifactError::Truncated {
            needed: u64::MAX,
            ..
        }
    ));
}

#[test]
fn trailing_bytes() {
    let mut bytes = artifact::encode(&sample());
    bytes.extend_from_slice(b"junk");
    let (e, msg) = reject(&bytes);
    assert!(matches!(e, ArtifactError::TrailingBytes { extra: 4, .. }));
    assert!(msg.contains("4 unexpected bytes after the"), "{msg}");
}

#[test]
fn one_flipped_payload_byte_fails_the_checksum() {
    let bytes = artifact::encode(&sample());
    for at in [HEADER_BYTES, HEADER_BYTES + 37, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let (e, msg) = reject(&b);
        assert!(matches!(e, ArtifactError::Checksum { .. }), "{msg}");
        assert!(
            msg.starts_with("corrupt artifact: checksum mismatch"),
            "{msg}"
        );
    }
    // A damaged checksum field is caught the same way.
    let mut b = bytes;
    b[17] ^= 1;
    assert!(matches!(reject(&b).0, ArtifactError::Checksum { .. }));
}

#[test]
fn payloads_that_are_not_artifacts() {
    // Empty; a string length of 2^64-ish; a target and then no flags; a signature claiming
    // 2^32-1 inputs (must fail on the missing bytes, not reserve memory for them).
    for payload in [
        &b""[..],
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x04trn2",
        b"\x04trn2\x00\xff\xff\xff\xff\x0f\x01x",
    ] {
        let (e, msg) = reject(&with_payload(payload));
        assert!(matches!(e, ArtifactError::Payload(_)), "{payload:?}: {msg}");
        assert!(msg.starts_with("malformed artifact payload: "), "{msg}");
    }
    // A whole artifact followed by more bytes inside the checksummed payload.
    let bytes = artifact::encode(&sample());
    let mut payload = bytes[HEADER_BYTES..].to_vec();
    payload.push(0);
    let (_, msg) = reject(&with_payload(&payload));
    assert!(
        msg.contains("1 bytes left over after the artifact"),
        "{msg}"
    );
}

#[test]
fn random_bytes_are_rejected() {
    // A fixed linear congruential sequence: reproducible without a seed.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for len in [1usize, 19, 20, 64, 1000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        assert!(artifact::decode(&bytes).is_err());
        // Random bytes behind a correct header reach the payload decoder, and still fail.
        assert!(artifact::decode(&with_payload(&bytes)).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Rejections: the meaning

#[test]
fn unknown_target() {
    let mut a = sample();
    a.target = "h100".into();
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("unknown target `h100`"), "{msg}");
}

#[test]
fn weight_of_the_wrong_shape() {
    let mut a = sample();
    a.weights[0].1 = HostTensor::zeros(DType::F32, &[1, P as usize]);
    let (e, msg) = reject_artifact(&a);
    assert!(matches!(e, ArtifactError::Invalid(_)));
    assert_eq!(
        msg,
        "invalid artifact: weight for tensor @b is f32[1, 128], but tensor @b is f32[128, 1]"
    );
}

#[test]
fn weight_data_of_the_wrong_length() {
    let mut a = sample();
    a.weights[0].1.data.pop();
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("has 511 bytes of data, but 128 elements of f32 need 512"),
        "{msg}"
    );
}

#[test]
fn weights_must_be_inputs_and_unique() {
    let mut a = sample();
    a.weights[0].0 = TensorId(2);
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("refers to @y, an output tensor"), "{msg}");

    let mut a = sample();
    a.weights.push(a.weights[0].clone());
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("out of order or repeated"), "{msg}");

    let mut a = sample();
    a.weights[0].0 = TensorId(9);
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("tensor #9, but the program has 3 tensors"),
        "{msg}"
    );
}

#[test]
fn signature_must_match_the_program() {
    let mut a = sample();
    a.signature.inputs[0].shape = vec![P as usize, 65];
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("signature input `x` is f32[128, 65]"), "{msg}");

    let mut a = sample();
    a.signature.inputs.push(entry("b", 1, 1));
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("which is a weight"), "{msg}");

    let mut a = sample();
    a.signature.outputs[0].tensor = TensorId(0);
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("signature output `y` refers to @x, an input tensor"),
        "{msg}"
    );

    let mut a = sample();
    a.signature.inputs.clear();
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("input tensor @x is neither a weight nor a signature input"),
        "{msg}"
    );

    let mut a = sample();
    a.signature.outputs.push(entry("y", 2, N as usize));
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("signature output `y` is listed twice"),
        "{msg}"
    );
}

#[test]
fn instruction_out_of_bounds_of_its_buffer() {
    let mut a = sample();
    // The activation reads 65 elements per partition of the 64-element %xt.
    let Op::Activation { src, .. } = &mut a.program.queues[1].insts[0].op else {
        unreachable!()
    };
    src.dims = vec![Dim::new(1, N + 1)];
    let (e, msg) = reject_artifact(&a);
    assert!(
        matches!(
            &e,
            ArtifactError::InvalidInstruction {
                rule: Rule::OutOfBounds,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.starts_with(
            "invalid artifact: instruction act[0] activation (node `relu_bias`, tile #2): src %xt \
             touches elements 0..=64"
        ),
        "{msg}"
    );
}

#[test]
fn instruction_rules_of_the_tile_verifier_apply() {
    // A DMA store into the weight: inputs are read-only.
    let mut a = sample();
    let Op::DmaCopy { dst, .. } = &mut a.program.queues[2].insts[0].op else {
        unreachable!()
    };
    *dst = whole(0, N);
    let (e, msg) = reject_artifact(&a);
    assert!(matches!(
        e,
        ArtifactError::InvalidInstruction {
            rule: Rule::WriteToInput,
            ..
        }
    ));
    assert!(msg.contains("instruction dma1[0] dma_copy"), "{msg}");
}

#[test]
fn machine_structure_is_checked() {
    let mut a = sample();
    a.program.queues[1].insts[0].waits[0].count = 3;
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains("waits for 3 instructions of dma0, which has only 2"),
        "{msg}"
    );

    let mut a = sample();
    a.program.buffers[2].placement = Some(Placement {
        partition: 0,
        byte_offset: 1 << 40,
    });
    let (_, msg) = reject_artifact(&a);
    assert!(msg.contains("%yt is placed at bytes"), "{msg}");
}

#[test]
fn waits_that_deadlock() {
    // The load of x waits for the activation, which waits for both loads.
    let mut a = sample();
    a.program.queues[0].insts[0].waits = vec![Wait {
        queue: QueueId(1),
        count: 1,
    }];
    let (_, msg) = reject_artifact(&a);
    assert!(
        msg.contains(
            "the waits deadlock: instruction dma0[0] dma_copy (node `relu_bias`, tile #0)"
        ),
        "{msg}"
    );
}

#[test]
fn absurd_sizes_are_errors() {
    let mut a = sample();
    a.program.buffers[0].free_shape = vec![usize::MAX, usize::MAX];
    assert!(artifact::validate(&a).is_err());
    let mut a = sample();
    a.program.tensors[1].shape = vec![usize::MAX, usize::MAX];
    a.signature.inputs.clear();
    assert!(artifact::validate(&a).is_err());
}

// ---------------------------------------------------------------------------------------------
// Robustness

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Damaged files are refused or, if the damage happens to keep them valid, decode to a valid
    /// artifact; decoding never panics.
    #[test]
    fn damaged_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        fix_header in any::<bool>(),
    ) {
        let mut bytes = artifact::encode(&sample());
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        // With a recomputed header the damage reaches the payload decoder and the validator
        // instead of stopping at the checksum.
        if fix_header && bytes.len() >= HEADER_BYTES {
            bytes = with_payload(&bytes[HEADER_BYTES..]);
        }
        if let Ok(a) = artifact::decode(&bytes) {
            prop_assert!(artifact::validate(&a).is_ok());
            prop_assert_eq!(artifact::encode(&a), bytes);
        }
    }
}
