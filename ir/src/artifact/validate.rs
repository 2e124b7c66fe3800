//! What a decoded artifact must satisfy before anything executes it: a known target, a
//! structurally sound machine program whose every instruction passes the tile verifier's rules
//! and whose waits cannot deadlock, and weights and a signature that agree with the program's
//! tensors.

use super::{Artifact, ArtifactError, SignatureEntry};
use crate::access::TensorId;
use crate::dtype::DType;
use crate::machine::{InstRef, MachineProgram, QueueId, check_machine_program};
use crate::program::{HbmTensor, TensorKind};
use crate::target::TargetSpec;
use crate::verify::Verifier;
use std::collections::BTreeSet;

/// Checks every rule a runnable artifact obeys; the error names the first one broken.
///
/// The order matters: the per-buffer checks run before [`check_machine_program`], whose size
/// arithmetic assumes sane buffers, and instructions are checked only once the program's
/// structure is known to be sound.
pub fn validate(artifact: &Artifact) -> Result<(), ArtifactError> {
    let target = TargetSpec::by_name(&artifact.target)
        .map_err(|e| ArtifactError::Invalid(format!("it was compiled for an {e}")))?;
    let program = &artifact.program;
    let verifier = Verifier::all_live(&target, &program.buffers)
        .map_err(|e| ArtifactError::Invalid(format!("{e} ({})", e.rule)))?;
    check_machine_program(program, &target).map_err(ArtifactError::Invalid)?;
    check_instructions(program, &verifier)?;
    check_no_deadlock(program)?;
    let weights = check_weights(artifact)?;
    check_signature(artifact, &weights)
}

fn check_instructions(program: &MachineProgram, verifier: &Verifier) -> Result<(), ArtifactError> {
    let mut flat = 0usize;
    for (qi, queue) in program.queues.iter().enumerate() {
        for (i, inst) in queue.insts.iter().enumerate() {
            if let Err(e) = verifier.check_op(&program.tensors, &program.buffers, flat, &inst.op) {
                let at = InstRef {
                    queue: QueueId(qi as u32),
                    index: i as u32,
                };
                return Err(ArtifactError::InvalidInstruction {
                    inst: at.describe(program),
                    rule: e.rule,
                    detail: e.detail,
                });
            }
            flat += 1;
        }
    }
    Ok(())
}

/// Runs the queues as far as their waits allow, in rounds, with no data: if some queue can never
/// finish, the waits form a cycle and every execution of the program would hang.
fn check_no_deadlock(program: &MachineProgram) -> Result<(), ArtifactError> {
    let queues = &program.queues;
    let mut done = vec![0usize; queues.len()];
    loop {
        let mut progressed = false;
        for (qi, q) in queues.iter().enumerate() {
            while let Some(inst) = q.insts.get(done[qi]) {
                // `check_machine_program` has checked that every wait names an existing queue.
                let ready = inst.waits.iter().all(|w| {
                    done.get(w.queue.0 as usize)
                        .is_some_and(|&n| n >= w.count as usize)
                });
                if !ready {
                    break;
                }
                done[qi] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let stuck = queues
        .iter()
        .enumerate()
        .find(|(qi, q)| done[*qi] < q.insts.len());
    match stuck {
        None => Ok(()),
        Some((qi, _)) => {
            let at = InstRef {
                queue: QueueId(qi as u32),
                index: done[qi] as u32,
            };
            Err(ArtifactError::Invalid(format!(
                "the waits deadlock: instruction {} can never start, because the instructions it \
                 waits for (directly or through others) wait for it",
                at.describe(program)
            )))
        }
    }
}

/// Checks the weights and returns their tensor ids.
fn check_weights(artifact: &Artifact) -> Result<BTreeSet<TensorId>, ArtifactError> {
    let program = &artifact.program;
    let mut ids = BTreeSet::new();
    let mut previous: Option<TensorId> = None;
    for (k, (id, data)) in artifact.weights.iter().enumerate() {
        let t = input_tensor(program, *id, &format!("weight #{k}"))?;
        let who = format!("weight for tensor @{}", t.name);
        // Sorted and unique, so that one compile always lists weights in one order.
        if previous.is_some_and(|p| p >= *id) {
            return Err(ArtifactError::Invalid(format!(
                "{who} is out of order or repeated; weights are sorted by tensor id, each once"
            )));
        }
        previous = Some(*id);
        check_same_type(&who, t, data.dtype, &data.shape)?;
        let needed = t
            .elems()
            .checked_mul(t.dtype.size_bytes() as u64)
            .filter(|_| t.elems() < u64::MAX);
        if needed != Some(data.data.len() as u64) {
            return Err(ArtifactError::Invalid(format!(
                "{who} has {} bytes of data, but {} elements of {} need {}",
                data.data.len(),
                t.elems(),
                t.dtype,
                needed.map_or_else(|| "more than can be addressed".into(), |n| n.to_string())
            )));
        }
        ids.insert(*id);
    }
    Ok(ids)
}

fn check_signature(artifact: &Artifact, weights: &BTreeSet<TensorId>) -> Result<(), ArtifactError> {
    let program = &artifact.program;
    let sig = &artifact.signature;
    let mut fed = BTreeSet::new();
    for (kind, entries) in [("input", &sig.inputs), ("output", &sig.outputs)] {
        let mut names = BTreeSet::new();
        let mut tensors = BTreeSet::new();
        for e in entries {
            let who = format!("signature {kind} `{}`", e.name);
            if !names.insert(e.name.as_str()) {
                return Err(ArtifactError::Invalid(format!(
                    "{who} is listed twice; names in the signature are unique"
                )));
            }
            if !tensors.insert(e.tensor) {
                return Err(ArtifactError::Invalid(format!(
                    "{who} refers to tensor #{}, which another {kind} already uses",
                    e.tensor.0
                )));
            }
            check_entry(program, kind, &who, e, weights)?;
        }
        if kind == "input" {
            fed = tensors;
        }
    }
    // Every input must be supplied by someone, or the program would read uninitialised HBM.
    for (i, t) in program.tensors.iter().enumerate() {
        let id = TensorId(i as u32);
        if t.kind == TensorKind::Input && !weights.contains(&id) && !fed.contains(&id) {
            return Err(ArtifactError::Invalid(format!(
                "input tensor @{} is neither a weight nor a signature input, so nothing \
                 supplies its data",
                t.name
            )));
        }
    }
    Ok(())
}

fn check_entry(
    program: &MachineProgram,
    kind: &str,
    who: &str,
    e: &SignatureEntry,
    weights: &BTreeSet<TensorId>,
) -> Result<(), ArtifactError> {
    let t = if kind == "input" {
        let t = input_tensor(program, e.tensor, who)?;
        if weights.contains(&e.tensor) {
            return Err(ArtifactError::Invalid(format!(
                "{who} refers to @{}, which is a weight; the caller cannot supply a weight",
                t.name
            )));
        }
        t
    } else {
        let t = tensor(program, e.tensor, who)?;
        if t.kind != TensorKind::Output {
            return Err(ArtifactError::Invalid(format!(
                "{who} refers to @{}, {}; outputs are output tensors",
                t.name,
                kind_phrase(t.kind)
            )));
        }
        t
    };
    check_same_type(who, t, e.dtype, &e.shape)
}

fn tensor<'p>(
    program: &'p MachineProgram,
    id: TensorId,
    who: &str,
) -> Result<&'p HbmTensor, ArtifactError> {
    program.tensor(id).ok_or_else(|| {
        ArtifactError::Invalid(format!(
            "{who} refers to tensor #{}, but the program has {} tensors",
            id.0,
            program.tensors.len()
        ))
    })
}

fn input_tensor<'p>(
    program: &'p MachineProgram,
    id: TensorId,
    who: &str,
) -> Result<&'p HbmTensor, ArtifactError> {
    let t = tensor(program, id, who)?;
    if t.kind != TensorKind::Input {
        return Err(ArtifactError::Invalid(format!(
            "{who} refers to @{}, {}; only input tensors take data from outside",
            t.name,
            kind_phrase(t.kind)
        )));
    }
    Ok(t)
}

fn check_same_type(
    who: &str,
    t: &HbmTensor,
    dtype: DType,
    shape: &[usize],
) -> Result<(), ArtifactError> {
    if t.dtype != dtype || t.shape != shape {
        return Err(ArtifactError::Invalid(format!(
            "{who} is {dtype}{shape:?}, but tensor @{} is {}{:?}",
            t.name, t.dtype, t.shape
        )));
    }
    Ok(())
}

fn kind_phrase(kind: TensorKind) -> &'static str {
    match kind {
        TensorKind::Input => "an input tensor",
        TensorKind::Output => "an output tensor",
        TensorKind::Scratch => "a scratch tensor",
    }
}
